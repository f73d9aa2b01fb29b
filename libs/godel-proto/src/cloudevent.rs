//! CloudEvents 1.0 in structured JSON mode: the envelope every Godel event is
//! published in, with the proto3 JSON form of a `godel.events.v1` message as `data`.

use chrono::{DateTime, Utc};
use godel_types::EventId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The only CloudEvents version written and accepted.
pub const SPEC_VERSION: &str = "1.0";
/// The `datacontenttype` of Godel events.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// Media type of a whole structured-mode event (for a `Content-Type` header).
pub const EVENT_CONTENT_TYPE: &str = "application/cloudevents+json";

/// The CloudEvent `type` for `event` of `area`: `dev.godel.<area>.<event>.v1`
/// (for example `dev.godel.task.queued.v1`).
pub fn event_type(area: &str, event: &str) -> String {
    format!("dev.godel.{area}.{event}.v1")
}

/// A CloudEvent whose `data` is a `T` (any JSON when decoding without knowing the
/// type yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<T = serde_json::Value> {
    /// Always [`SPEC_VERSION`].
    pub specversion: String,
    /// Unique per event; consumers deduplicate on it. Also sent as `Nats-Msg-Id`.
    pub id: EventId,
    /// Who produced it, as a URI reference (for example `/godel/scheduler`).
    pub source: String,
    /// What happened: see [`event_type`].
    #[serde(rename = "type")]
    pub type_: String,
    /// The resource the event is about, within `source` (for example a `tsk_…` id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When it happened (RFC 3339).
    pub time: DateTime<Utc>,
    /// Always [`DATA_CONTENT_TYPE`].
    #[serde(default = "default_content_type")]
    pub datacontenttype: String,
    /// The payload.
    pub data: T,
}

fn default_content_type() -> String {
    DATA_CONTENT_TYPE.to_owned()
}

/// Why an event could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CloudEventError {
    #[error("could not serialize the data of a `{event_type}` event")]
    Serialize {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("not a CloudEvents JSON document")]
    Parse {
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported CloudEvents specversion `{found}` (expected `1.0`)")]
    UnsupportedSpecVersion { found: String },
    #[error("unsupported datacontenttype `{found}` (expected `application/json`)")]
    UnsupportedContentType { found: String },
    #[error("the data of event {id} (`{event_type}`) is not the expected message")]
    Data {
        id: EventId,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Encodes `data` as the `data` of a CloudEvent. An empty `subject` is left out.
///
/// `T` is meant to be a generated message, whose serde impls produce proto3 JSON.
pub fn encode<T: Serialize>(
    id: EventId,
    source: &str,
    event_type: &str,
    subject: &str,
    time: DateTime<Utc>,
    data: &T,
) -> Result<Vec<u8>, CloudEventError> {
    let event = CloudEvent {
        specversion: SPEC_VERSION.to_owned(),
        id,
        source: source.to_owned(),
        type_: event_type.to_owned(),
        subject: (!subject.is_empty()).then(|| subject.to_owned()),
        time,
        datacontenttype: DATA_CONTENT_TYPE.to_owned(),
        data,
    };
    serde_json::to_vec(&event).map_err(|source| CloudEventError::Serialize {
        event_type: event_type.to_owned(),
        source,
    })
}

/// Decodes a CloudEvent whose `data` is a `T`. Use `T = serde_json::Value` to look at
/// the `type` first, then [`CloudEvent::into_data`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<CloudEvent<T>, CloudEventError> {
    let event: CloudEvent<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|source| CloudEventError::Parse { source })?;
    if event.specversion != SPEC_VERSION {
        return Err(CloudEventError::UnsupportedSpecVersion {
            found: event.specversion,
        });
    }
    let media_type = event
        .datacontenttype
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if !media_type.eq_ignore_ascii_case(DATA_CONTENT_TYPE) {
        return Err(CloudEventError::UnsupportedContentType {
            found: event.datacontenttype,
        });
    }
    event.into_data()
}

impl CloudEvent<serde_json::Value> {
    /// Reads the JSON `data` as a `T`, keeping the envelope.
    pub fn into_data<T: DeserializeOwned>(self) -> Result<CloudEvent<T>, CloudEventError> {
        let data = serde_json::from_value(self.data).map_err(|source| CloudEventError::Data {
            id: self.id,
            event_type: self.type_.clone(),
            source,
        })?;
        Ok(CloudEvent {
            specversion: self.specversion,
            id: self.id,
            source: self.source,
            type_: self.type_,
            subject: self.subject,
            time: self.time,
            datacontenttype: self.datacontenttype,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use godel_types::{OrchestratorId, SessionId, TaskId, TeamId};
    use serde_json::json;

    use super::*;
    use crate::common::v1::{Caller, SubjectKind};
    use crate::convert::to_timestamp;
    use crate::events::v1::{IamChange, IamEvent, SessionActivityEvent, TaskEvent};
    use crate::orchestrator::v1::{SessionEvent, session_event};
    use crate::scheduler::v1::TaskState;

    fn time() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 30, 0).unwrap()
    }

    fn task_event(team: TeamId, task: TaskId) -> TaskEvent {
        TaskEvent {
            team_id: team.to_string(),
            task_id: task.to_string(),
            plan_id: String::new(),
            task_type: "code.fix".into(),
            from_state: TaskState::Blocked.into(),
            to_state: TaskState::Queued.into(),
            epoch: 7,
            attempt: 1,
            reason: "dependencies succeeded".into(),
            orchestrator_id: String::new(),
            occurred_at: Some(to_timestamp(time())),
        }
    }

    #[test]
    fn task_event_round_trips_with_proto3_json_names() {
        let (team, task, id) = (TeamId::new(), TaskId::new(), EventId::new());
        let event = task_event(team, task);
        let bytes = encode(
            id,
            "/godel/scheduler",
            &event_type("task", "queued"),
            &task.to_string(),
            time(),
            &event,
        )
        .unwrap();

        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], id.to_string());
        assert_eq!(json["source"], "/godel/scheduler");
        assert_eq!(json["type"], "dev.godel.task.queued.v1");
        assert_eq!(json["subject"], task.to_string());
        assert_eq!(json["time"], "2025-06-01T12:30:00Z");
        assert_eq!(json["datacontenttype"], "application/json");
        // proto3 JSON: lowerCamelCase names, enum names, 64-bit integers as strings,
        // RFC 3339 timestamps, default values left out.
        assert_eq!(
            json["data"],
            json!({
                "teamId": team.to_string(),
                "taskId": task.to_string(),
                "taskType": "code.fix",
                "fromState": "TASK_STATE_BLOCKED",
                "toState": "TASK_STATE_QUEUED",
                "epoch": "7",
                "attempt": 1,
                "reason": "dependencies succeeded",
                "occurredAt": "2025-06-01T12:30:00+00:00"
            })
        );

        let decoded: CloudEvent<TaskEvent> = decode(&bytes).unwrap();
        assert_eq!(decoded.id, id);
        assert_eq!(decoded.type_, "dev.godel.task.queued.v1");
        assert_eq!(decoded.subject, Some(task.to_string()));
        assert_eq!(decoded.time, time());
        assert_eq!(decoded.data, event);
    }

    #[test]
    fn oneof_payloads_round_trip() {
        let session = SessionId::new();
        let activity = SessionActivityEvent {
            event: Some(SessionEvent {
                session_id: session.to_string(),
                team_id: TeamId::new().to_string(),
                task_id: TaskId::new().to_string(),
                offset: 42,
                occurred_at: Some(to_timestamp(time())),
                line: r#"{"type":"tool_call","name":"bash"}"#.into(),
                body: Some(session_event::Body::ToolCall(session_event::ToolCall {
                    call_id: "c1".into(),
                    name: "bash".into(),
                    input_json: r#"{"command":"cargo test"}"#.into(),
                })),
            }),
            orchestrator_id: OrchestratorId::new().to_string(),
        };
        let bytes = encode(
            EventId::new(),
            "/godel/orchestrator",
            &event_type("session", "activity"),
            "",
            time(),
            &activity,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(json.get("subject").is_none());
        assert_eq!(json["data"]["event"]["toolCall"]["name"], "bash");
        assert_eq!(json["data"]["event"]["offset"], "42");
        let decoded: CloudEvent<SessionActivityEvent> = decode(&bytes).unwrap();
        assert_eq!(decoded.data, activity);
    }

    #[test]
    fn decodes_in_two_steps_by_type() {
        let iam = IamEvent {
            team_id: TeamId::new().to_string(),
            change: IamChange::MemberAdded.into(),
            actor: Some(Caller {
                subject_kind: SubjectKind::User.into(),
                subject_id: "usr_0190".into(),
                team_id: String::new(),
                roles: vec!["admin".into()],
            }),
            subject_id: "usr_0191".into(),
            roles: vec!["developer".into()],
            occurred_at: Some(to_timestamp(time())),
        };
        let bytes = encode(
            EventId::new(),
            "/godel/auth",
            &event_type("iam", "member_added"),
            "",
            time(),
            &iam,
        )
        .unwrap();
        let any: CloudEvent = decode(&bytes).unwrap();
        assert_eq!(any.type_, "dev.godel.iam.member_added.v1");
        assert_eq!(any.data["change"], "IAM_CHANGE_MEMBER_ADDED");
        assert_eq!(any.data["actor"]["subjectKind"], "SUBJECT_KIND_USER");
        assert_eq!(any.into_data::<IamEvent>().unwrap().data, iam);
    }

    #[test]
    fn accepts_json_from_other_producers() {
        // Proto3 JSON readers also accept the original field names and enum numbers,
        // and fields added by newer producers are skipped.
        let id = EventId::new();
        let text = json!({
            "specversion": "1.0",
            "id": id.to_string(),
            "source": "/other",
            "type": "dev.godel.task.queued.v1",
            "time": "2025-06-01T12:30:00Z",
            "datacontenttype": "application/json; charset=utf-8",
            "data": {"task_id": "tsk_x", "toState": 2, "epoch": 3, "addedLater": {"x": 1}}
        });
        let event: CloudEvent<TaskEvent> = decode(text.to_string().as_bytes()).unwrap();
        assert_eq!(event.data.task_id, "tsk_x");
        assert_eq!(event.data.to_state(), TaskState::Queued);
        assert_eq!(event.data.epoch, 3);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let good = encode(
            EventId::new(),
            "/godel/scheduler",
            "dev.godel.task.queued.v1",
            "",
            time(),
            &task_event(TeamId::new(), TaskId::new()),
        )
        .unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&good).unwrap();

        let mut wrong_version = json.clone();
        wrong_version["specversion"] = "0.3".into();
        let err = decode::<TaskEvent>(wrong_version.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(err, CloudEventError::UnsupportedSpecVersion { ref found } if found == "0.3")
        );

        let mut wrong_type = json.clone();
        wrong_type["datacontenttype"] = "application/protobuf".into();
        let err = decode::<TaskEvent>(wrong_type.to_string().as_bytes()).unwrap_err();
        assert!(matches!(
            err,
            CloudEventError::UnsupportedContentType { .. }
        ));

        json["data"]["toState"] = "NOT_A_STATE".into();
        let err = decode::<TaskEvent>(json.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, CloudEventError::Data { .. }), "{err:?}");

        let err = decode::<TaskEvent>(b"not json").unwrap_err();
        assert!(matches!(err, CloudEventError::Parse { .. }));
    }
}
