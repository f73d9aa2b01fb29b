//! Event intake: a durable bus consumer that records every team event (task, plan,
//! session and IAM changes) the other services publish as an audit record.
//!
//! - **Idempotent**: the record id is the CloudEvent id's UUID, so an event delivered
//!   twice (redelivery, restart before the ack) is stored once.
//! - **Nothing acknowledged is lost**: a delivery is acked only after its append
//!   committed; a failed append is nak'ed and delivered again after [`RETRY_DELAY`].
//! - **Mapping**: action `<area>.<event>` from the subject (`task.queued`), team from
//!   the subject, actor from an IAM event's `actor` (else the publishing service, from
//!   the CloudEvent `source`), resource from the CloudEvent `subject`, outcome
//!   success, trace id from the `traceparent` header, details the event's `data`.
//! - A message that is not a CloudEvent on a team subject cannot be recorded; it is
//!   logged as an error and acked, so it does not block the consumer forever.

use std::sync::Arc;
use std::time::Duration;

use godel_bus::{Bus, BusError, ConsumerConfig, Delivery, Headers, Subject};
use godel_proto::cloudevent::{self, CloudEventError};
use godel_proto::common::v1::{Caller, SubjectKind};
use godel_types::{AuditRecordId, TeamId};
use tokio_util::sync::CancellationToken;

use crate::log::AuditLog;
use crate::record::{Actor, ActorKind, NewRecord, Outcome, RecordBody};

/// The durable consumer's name.
pub const CONSUMER: &str = "audit";
/// How long a failed append waits before the event is delivered again.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How long the consumer waits before asking the bus again after it failed.
const BUS_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Why a bus message cannot become an audit record.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("`{subject}` is not a team event subject (`godel.v1.team.<team_id>.<area>.<event>`)")]
    Subject { subject: String },
    #[error("the message on `{subject}` is not a Godel CloudEvent")]
    Decode {
        subject: String,
        #[source]
        source: CloudEventError,
    },
    #[error("the event {event_id} on `{subject}` has a time outside the years 1678 to 2261")]
    Time { subject: String, event_id: String },
    #[error("the bus consumer failed")]
    Bus(#[from] BusError),
}

/// The audit record of one team event: see the module documentation for the mapping.
pub fn record_from_event(
    subject: &Subject,
    headers: &Headers,
    payload: &[u8],
) -> Result<NewRecord, IntakeError> {
    let tokens: Vec<&str> = subject.as_str().split('.').collect();
    let (team, area, event) = match tokens.as_slice() {
        ["godel", "v1", "team", team, area, event] => (*team, *area, *event),
        _ => {
            return Err(IntakeError::Subject {
                subject: subject.to_string(),
            });
        }
    };
    let team_id: TeamId = team.parse().map_err(|_| IntakeError::Subject {
        subject: subject.to_string(),
    })?;
    let event_doc =
        cloudevent::decode::<serde_json::Value>(payload).map_err(|source| IntakeError::Decode {
            subject: subject.to_string(),
            source,
        })?;
    if event_doc.time.timestamp_nanos_opt().is_none() {
        return Err(IntakeError::Time {
            subject: subject.to_string(),
            event_id: event_doc.id.to_string(),
        });
    }
    let actor = event_doc
        .data
        .get("actor")
        .and_then(|a| serde_json::from_value::<Caller>(a.clone()).ok())
        .filter(|c| !c.subject_id.is_empty())
        .map(|c| Actor {
            kind: match SubjectKind::try_from(c.subject_kind) {
                Ok(SubjectKind::User) => ActorKind::User,
                Ok(SubjectKind::ApiKey) => ActorKind::ApiKey,
                Ok(SubjectKind::Service) => ActorKind::Service,
                _ => ActorKind::Unspecified,
            },
            subject_id: c.subject_id,
            team_id: c.team_id.parse().ok(),
            roles: c.roles,
        })
        .unwrap_or_else(|| Actor {
            kind: ActorKind::Service,
            subject_id: service_name(&event_doc.source).to_owned(),
            team_id: None,
            roles: Vec::new(),
        });
    let details_json = match &event_doc.data {
        serde_json::Value::Null => String::new(),
        data => data.to_string(),
    };
    Ok(NewRecord {
        id: AuditRecordId::from_uuid(event_doc.id.as_uuid()),
        occurred_at: event_doc.time,
        team_id: Some(team_id),
        body: RecordBody {
            actor,
            action: format!("{area}.{event}"),
            resource: event_doc.subject.unwrap_or_default(),
            outcome: Outcome::Success,
            trace_id: headers
                .get("traceparent")
                .and_then(|t| trace_id(t))
                .unwrap_or_default(),
            client_ip: String::new(),
            details_json,
        },
    })
}

/// `scheduler` for `/godel/scheduler`; other sources are kept whole.
fn service_name(source: &str) -> &str {
    source
        .strip_prefix("/godel/")
        .filter(|s| !s.is_empty())
        .unwrap_or(source)
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), unless it is
/// malformed or all zeros.
fn trace_id(traceparent: &str) -> Option<String> {
    let id = traceparent.trim().split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

/// Consumes every team event until `stop` is cancelled or the bus closes.
pub async fn run(
    log: Arc<AuditLog>,
    bus: Arc<dyn Bus>,
    stop: CancellationToken,
) -> Result<(), IntakeError> {
    let mut consumer = bus
        .consumer(ConsumerConfig::new(
            CONSUMER,
            vec![Subject::all_team_events()],
        ))
        .await?;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = consumer.next() => next,
        };
        match next {
            Ok(Some(delivery)) => handle(&log, delivery).await,
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::warn!(error = %err, "reading audit events from the bus failed");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(BUS_RETRY_DELAY) => {}
                }
            }
        }
    }
}

/// Records one delivery, then acks it; naks it when the append failed.
async fn handle(log: &AuditLog, delivery: Delivery) {
    let record = match record_from_event(&delivery.subject, &delivery.headers, &delivery.payload) {
        Ok(record) => record,
        Err(err) => {
            tracing::error!(
                error = %err,
                message_id = %delivery.id,
                "an event cannot be audited; dropping it"
            );
            if let Err(err) = delivery.ack().await {
                tracing::warn!(error = %err, "acking an unreadable event failed");
            }
            return;
        }
    };
    match log.append(vec![record]).await {
        Ok(_) => {
            if let Err(err) = delivery.ack().await {
                // The record is stored; the redelivery is recorded as a duplicate.
                tracing::warn!(error = %err, "acking an audited event failed");
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, message_id = %delivery.id, "recording an event failed; retrying");
            if let Err(err) = delivery.nak(Some(RETRY_DELAY)).await {
                tracing::warn!(error = %err, "nak of an event failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_trace_id_of_a_traceparent() {
        assert_eq!(
            trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("00-4bf92f35-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("garbage"), None);
    }

    #[test]
    fn names_the_publishing_service() {
        assert_eq!(service_name("/godel/scheduler"), "scheduler");
        assert_eq!(service_name("/godel/"), "/godel/");
        assert_eq!(service_name("urn:other"), "urn:other");
    }

    #[test]
    fn rejects_what_is_not_a_team_event() {
        let orchestrator = godel_types::OrchestratorId::new();
        let err = record_from_event(&Subject::dispatch(orchestrator), &Headers::new(), b"{}")
            .unwrap_err();
        assert!(matches!(err, IntakeError::Subject { .. }), "{err:?}");
        let err = record_from_event(
            &Subject::task(TeamId::new(), "queued"),
            &Headers::new(),
            b"not json",
        )
        .unwrap_err();
        assert!(matches!(err, IntakeError::Decode { .. }), "{err:?}");
    }
}
