//! Live event streams (server-sent events, see [`crate::sse`]) of a session, a task
//! and a plan.
//!
//! - A session's stream relays the orchestrator's `StreamSessionEvents`: every entry
//!   of the session's event log, `id` = its offset (1, 2, 3 …); it ends when the
//!   session does.
//! - A task's and a plan's streams relay their state changes from the bus (subjects
//!   `godel.v1.team.<team>.task.*` / `.plan.*`), `id` = the bus stream sequence. The
//!   first event is always the current state (`snapshot`, read from the scheduler
//!   after the subscription began, so nothing between the two is lost); the stream
//!   ends after the terminal state.

use axum::extract::Path;
use axum::response::Response;
use godel_bus::{Consumer, Subject, Subscription};
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::orchestrator::v1::{SessionEvent, StreamSessionEventsRequest};
use godel_proto::scheduler::v1::{GetPlanRequest, GetTaskRequest, PlanState, TaskState};
use godel_types::{PlanId, SessionId, TaskId, TeamId};
use http::HeaderMap;
use serde_json::{Value, json};

use crate::call::{Ctx, parse_path_id, upstream};
use crate::openapi::ProblemDoc;
use crate::sse::{self, Sink};

/// The envelope fields of a session event; the one other field is its body.
const SESSION_ENVELOPE: &[&str] = &[
    "sessionId",
    "teamId",
    "taskId",
    "offset",
    "occurredAt",
    "line",
];

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/sessions/{session_id}/events",
    tag = "sessions",
    security(("bearer" = [])),
    params(
        ("team_id" = String, Path, description = "`team_…`"),
        ("session_id" = String, Path, description = "`ses_…`"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (its offset)"),
    ),
    responses(
        (status = 200, description = "Server-sent events: one per entry of the session's event log \
            (`id` = its offset; data `{offset, sessionId, taskId, kind, payload, time, line}`, `kind` \
            being `assistantMessage`, `toolCall`, `toolResult`, `fileChange`, `usage`, `state`, \
            `error`, `raw`, `runtimeStarted` or `agentState`, `line` the agent's original output), \
            then `end` once the session ended", content_type = "text/event-stream", body = String),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn session_events(
    ctx: Ctx,
    Path((team_id, session_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::SessionsRead)?;
    let session: SessionId = parse_path_id("session", &session_id)?;
    let after = sse::last_event_id(&headers)?;
    let request = ctx.stream_request(StreamSessionEventsRequest {
        team_id: team.to_string(),
        session_id: session.to_string(),
        from_offset: after.map_or(0, |n| n.saturating_add(1)),
        follow: true,
    })?;
    let mut events = ctx
        .state
        .clients
        .orchestrator
        .clone()
        .stream_session_events(request)
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(sse::respond(&ctx.state.streams, move |sink| async move {
        loop {
            let next = tokio::select! {
                () = sink.stopped() => return,
                next = events.message() => next,
            };
            let (event, last) = match next {
                Ok(Some(event)) => (sse::event(event.offset, &session_event(&event)), false),
                Ok(None) => (sse::end(&json!({"sessionId": session.to_string()})), true),
                Err(status) => (sse::problem(&upstream(status)), true),
            };
            if !sink.send(event).await || last {
                return;
            }
        }
    }))
}

/// A session event as sent: its envelope, `kind` and `payload` (the body).
fn session_event(event: &SessionEvent) -> Value {
    let mut fields = match serde_json::to_value(event) {
        Ok(Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    let body = fields
        .iter()
        .find(|(name, _)| !SESSION_ENVELOPE.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()));
    let (kind, payload) = body.unwrap_or_else(|| ("unknown".to_owned(), Value::Null));
    let mut data = json!({
        "offset": event.offset,
        "sessionId": event.session_id,
        "taskId": event.task_id,
        "kind": kind,
        "payload": payload,
        "time": fields.remove("occurredAt").unwrap_or(Value::Null),
    });
    if !event.line.is_empty() {
        data["line"] = Value::String(event.line.clone());
    }
    data
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/tasks/{task_id}/events",
    tag = "tasks",
    security(("bearer" = [])),
    params(
        ("team_id" = String, Path, description = "`team_…`"),
        ("task_id" = String, Path, description = "`tsk_…`"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "Server-sent events: first `snapshot` (data `{kind: \"snapshot\", \
            task}`, the task now), then one per state change (`id` = the bus stream sequence; data \
            `{kind: \"task.<state>\", sequence, time, event}`, `event` a `godel.events.v1.TaskEvent`), \
            then `end` after the terminal state", content_type = "text/event-stream", body = String),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn task_events(
    ctx: Ctx,
    Path((team_id, task_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TasksRead)?;
    let task: TaskId = parse_path_id("task", &task_id)?;
    let after = sse::last_event_id(&headers)?;
    let subscription = subscribe(&ctx, Subject::team_task_events(team), after).await?;
    let request = ctx.request(GetTaskRequest {
        team_id: team.to_string(),
        task_id: task.to_string(),
    })?;
    let current = ctx.state.clients.scheduler.clone().get_task(request).await;
    let current = current.map_err(upstream)?.into_inner();
    let state = current
        .task
        .as_ref()
        .map_or(TaskState::Unspecified, |t| t.state());
    let snapshot = json!({"kind": "snapshot", "task": current.task});
    let watch = Watch {
        field: "taskId",
        id: task.to_string(),
        terminal: task_terminal,
    };
    let first = sse::snapshot(
        after.is_none().then_some(subscription.last_sequence),
        &snapshot,
    );
    let done = Done::of(terminal_task_state(state), after.is_some());
    Ok(sse::respond(&ctx.state.streams, move |sink| {
        relay(sink, first, done, subscription.messages, watch)
    }))
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/plans/{plan_id}/events",
    tag = "plans",
    security(("bearer" = [])),
    params(
        ("team_id" = String, Path, description = "`team_…`"),
        ("plan_id" = String, Path, description = "`pln_…`"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "Server-sent events: first `snapshot` (data `{kind: \"snapshot\", \
            plan}`, the plan now), then one per plan event (`id` = the bus stream sequence; data \
            `{kind: \"plan.<event>\", sequence, time, event}`, `event` a `godel.events.v1.PlanEvent` or \
            `PlanIntegrationEvent`), then `end` after the terminal state", content_type = "text/event-stream", body = String),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn plan_events(
    ctx: Ctx,
    Path((team_id, plan_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::PlansRead)?;
    let plan: PlanId = parse_path_id("plan", &plan_id)?;
    let after = sse::last_event_id(&headers)?;
    let subscription = subscribe(&ctx, Subject::team_plan_events(team), after).await?;
    let request = ctx.request(GetPlanRequest {
        team_id: team.to_string(),
        plan_id: plan.to_string(),
    })?;
    let current = ctx.state.clients.scheduler.clone().get_plan(request).await;
    let current = current.map_err(upstream)?.into_inner();
    let state = current
        .plan
        .as_ref()
        .map_or(PlanState::Unspecified, |p| p.state());
    let snapshot = json!({"kind": "snapshot", "plan": current.plan});
    let watch = Watch {
        field: "planId",
        id: plan.to_string(),
        terminal: plan_terminal,
    };
    let first = sse::snapshot(
        after.is_none().then_some(subscription.last_sequence),
        &snapshot,
    );
    let done = Done::of(terminal_plan_state(state), after.is_some());
    Ok(sse::respond(&ctx.state.streams, move |sink| {
        relay(sink, first, done, subscription.messages, watch)
    }))
}

/// Subscribes to `filter` after the client's last event, or from now (the
/// subscription's `last_sequence` is then the id of the stream's snapshot).
async fn subscribe(ctx: &Ctx, filter: String, after: Option<u64>) -> Result<Subscription, Error> {
    ctx.state
        .streams
        .bus
        .subscribe(&filter, after.map(|n| n.saturating_add(1)))
        .await
        .map_err(|e| {
            tracing::warn!(error = %godel_error::chain(&e), "cannot subscribe to the bus");
            Error::unavailable("the event stream is not available; retry later")
        })
}

/// Whether a stream's resource is finished already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Not finished: relay until the terminal event.
    No,
    /// Finished, and the client is new: the snapshot says all.
    Now,
    /// Finished, and the client resumes: relay what it missed, up to the terminal event.
    AfterCatchingUp,
}

impl Done {
    fn of(finished: bool, resumed: bool) -> Self {
        match (finished, resumed) {
            (false, _) => Done::No,
            (true, false) => Done::Now,
            (true, true) => Done::AfterCatchingUp,
        }
    }
}

/// Which bus events a stream relays and when it ends.
struct Watch {
    /// The field of the event's `data` naming the resource (`taskId`, `planId`).
    field: &'static str,
    id: String,
    /// Whether an event's `data` is the resource's terminal state.
    terminal: fn(&Value) -> bool,
}

/// How long a resumed stream of a finished resource waits for the events it missed
/// before ending without them (they may have left the bus's retention).
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends `first` (the snapshot), then every bus event about the resource until its
/// terminal state. A new stream of a resource that is `done` already ends at once;
/// a resumed one first relays what the client missed, up to the terminal event.
async fn relay(
    sink: Sink,
    first: axum::response::sse::Event,
    done: Done,
    mut messages: Box<dyn Consumer>,
    watch: Watch,
) {
    if !sink.send(first).await {
        return;
    }
    let end = sse::end(&json!({watch.field: watch.id}));
    if done == Done::Now {
        sink.send(end).await;
        return;
    }
    let deadline = async {
        match done {
            Done::AfterCatchingUp => tokio::time::sleep(CATCH_UP).await,
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        let next = tokio::select! {
            () = sink.stopped() => return,
            () = &mut deadline => {
                sink.send(end).await;
                return;
            }
            next = messages.next() => next,
        };
        let delivery = match next {
            Ok(Some(delivery)) => delivery,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %godel_error::chain(&e), "event stream subscription failed");
                let error =
                    Error::unavailable("the event stream was interrupted; reconnect to resume");
                sink.send(sse::problem(&error)).await;
                return;
            }
        };
        let event = match godel_proto::cloudevent::decode::<Value>(&delivery.payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(sequence = delivery.sequence, error = %e, "skipping an undecodable event");
                continue;
            }
        };
        if event.data.get(watch.field).and_then(Value::as_str) != Some(watch.id.as_str()) {
            continue;
        }
        // `godel.v1.team.<team>.<area>.<event>` → `<area>.<event>`.
        let mut tokens = delivery.subject.as_str().rsplit('.');
        let event_name = tokens.next().unwrap_or_default();
        let kind = format!("{}.{event_name}", tokens.next().unwrap_or_default());
        let terminal = (watch.terminal)(&event.data);
        let data = json!({
            "kind": kind,
            "sequence": delivery.sequence,
            "time": event.time,
            "event": event.data,
        });
        if !sink.send(sse::event(delivery.sequence, &data)).await {
            return;
        }
        if terminal {
            sink.send(end).await;
            return;
        }
    }
}

fn terminal_task_state(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::DeadLettered
    )
}

fn terminal_plan_state(state: PlanState) -> bool {
    matches!(
        state,
        PlanState::Succeeded | PlanState::Failed | PlanState::Cancelled
    )
}

/// A `TaskEvent` into a terminal state.
fn task_terminal(data: &Value) -> bool {
    data.get("toState")
        .and_then(Value::as_str)
        .and_then(TaskState::from_str_name)
        .is_some_and(terminal_task_state)
}

/// A `PlanEvent` into a terminal state (integration events have no `toState`).
fn plan_terminal(data: &Value) -> bool {
    data.get("toState")
        .and_then(Value::as_str)
        .and_then(PlanState::from_str_name)
        .is_some_and(terminal_plan_state)
}

#[cfg(test)]
mod tests {
    use godel_proto::orchestrator::v1::session_event::{Body, Raw};

    use super::*;

    #[test]
    fn a_session_event_is_sent_with_its_kind_payload_and_line() {
        let event = SessionEvent {
            session_id: "ses_1".to_owned(),
            team_id: "team_1".to_owned(),
            task_id: "tsk_1".to_owned(),
            offset: 7,
            line: "{\"weird\":1}".to_owned(),
            body: Some(Body::Raw(Raw::default())),
            ..Default::default()
        };
        let data = session_event(&event);
        assert_eq!(data["offset"], 7);
        assert_eq!(data["kind"], "raw");
        assert_eq!(data["line"], "{\"weird\":1}");
        assert!(data["payload"].is_object(), "{data}");
    }

    #[test]
    fn terminal_states_end_the_streams() {
        assert!(task_terminal(&json!({"toState": "TASK_STATE_SUCCEEDED"})));
        assert!(task_terminal(
            &json!({"toState": "TASK_STATE_DEAD_LETTERED"})
        ));
        assert!(!task_terminal(&json!({"toState": "TASK_STATE_RUNNING"})));
        assert!(plan_terminal(&json!({"toState": "PLAN_STATE_FAILED"})));
        assert!(!plan_terminal(&json!({"branch": "godel/plan-x"})));
    }
}
