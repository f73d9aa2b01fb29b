//! `session.<state>` and `session.activity` events: a `godel.events.v1`
//! `SessionStateEvent` or `SessionActivityEvent` in a CloudEvents envelope, written
//! to the outbox in the transaction that made the change.

use chrono::{DateTime, Utc};
use godel_backend::cloud_event;
use godel_bus::Subject;
use godel_error::Error;
use godel_proto::events::v1::{SessionActivityEvent, SessionStateEvent};
use godel_store::OutboxEvent;

use super::model::{LoggedEvent, Session, SessionState};
use crate::grpc::{event_to_pb, state_to_pb, usage_to_pb};

/// The CloudEvents `source` of orchestrator events.
pub const EVENT_SOURCE: &str = "/godel/orchestrator";

/// The last subject token of the activity events.
pub const ACTIVITY: &str = "activity";

/// The event announcing that `session` (as it is after the change) went from `from`
/// to its current state at `now`.
pub(crate) fn state_event(
    session: &Session,
    from: Option<SessionState>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<OutboxEvent, Error> {
    let data = SessionStateEvent {
        team_id: session.team_id.to_string(),
        session_id: session.id.to_string(),
        task_id: session.task_id.to_string(),
        epoch: session.epoch,
        orchestrator_id: session.orchestrator_id.to_string(),
        from_state: from.map_or(0, |s| state_to_pb(s) as i32),
        to_state: state_to_pb(session.state) as i32,
        reason: reason.to_owned(),
        usage: Some(usage_to_pb(&session.usage)),
        occurred_at: Some(godel_proto::convert::to_timestamp(now)),
    };
    cloud_event(
        Subject::session(session.team_id, session.state.as_str()),
        EVENT_SOURCE,
        "session",
        &session.id.to_string(),
        now,
        &data,
    )
}

/// The `session.activity` event carrying one entry of `session`'s log.
pub(crate) fn activity_event(session: &Session, event: &LoggedEvent) -> Result<OutboxEvent, Error> {
    let data = SessionActivityEvent {
        event: Some(event_to_pb(session.team_id, session.task_id, event)),
        orchestrator_id: session.orchestrator_id.to_string(),
    };
    cloud_event(
        Subject::session(session.team_id, ACTIVITY),
        EVENT_SOURCE,
        "session",
        &session.id.to_string(),
        event.occurred_at,
        &data,
    )
}
