//! `task.<state>` and `plan.<event>` events: a `godel.events.v1.TaskEvent` or
//! `PlanEvent` in a CloudEvents envelope, written to the outbox in the transaction that made the change.

use godel_backend::{cloud_event, cloud_event_named};
use godel_bus::Subject;
use godel_error::Error;
use godel_proto::events::v1::{DispatchEvent, DispatchedTask, PlanEvent, TaskEvent};
use godel_store::OutboxEvent;
use godel_types::OrchestratorId;

use super::plans::{Plan, PlanState};
use super::store::time;
use super::task::{Task, TaskState};

/// The CloudEvents `source` of scheduler events.
pub const EVENT_SOURCE: &str = "/godel/scheduler";

/// The event announcing that `task` (as it is after the change) went from `from` to
/// its current state at `now` (database microseconds).
pub(crate) fn task_event(
    task: &Task,
    from: Option<TaskState>,
    reason: &str,
    now: i64,
) -> Result<OutboxEvent, Error> {
    let to = task.state;
    let occurred_at = time(now);
    let data = TaskEvent {
        team_id: task.team_id.to_string(),
        task_id: task.id.to_string(),
        plan_id: task.plan_id.map(|p| p.to_string()).unwrap_or_default(),
        task_type: task.task_type.clone(),
        from_state: from.map_or(0, |s| s.to_proto() as i32),
        to_state: to.to_proto() as i32,
        epoch: task.epoch,
        attempt: task.attempts,
        reason: reason.to_owned(),
        orchestrator_id: task.lease_owner.map(|o| o.to_string()).unwrap_or_default(),
        occurred_at: Some(godel_proto::convert::to_timestamp(occurred_at)),
    };
    cloud_event(
        Subject::task(task.team_id, to.as_str()),
        EVENT_SOURCE,
        "task",
        &task.id.to_string(),
        occurred_at,
        &data,
    )
}

/// The `plan.<event>` event about `plan` (as it is after the change): `submitted` when
/// `from` is `None`, the new state otherwise.
pub(crate) fn plan_event(
    plan: &Plan,
    from: Option<PlanState>,
    reason: &str,
    now: i64,
) -> Result<OutboxEvent, Error> {
    let occurred_at = time(now);
    let name = match from {
        None => "submitted",
        Some(_) => plan.state.as_str(),
    };
    let data = PlanEvent {
        team_id: plan.team_id.to_string(),
        plan_id: plan.id.to_string(),
        from_state: from.map_or(0, |s| s.to_proto() as i32),
        to_state: plan.state.to_proto() as i32,
        task_count: plan.task_count,
        succeeded_count: plan.succeeded_count,
        failed_count: plan.failed_count,
        cancelled_count: plan.cancelled_count,
        reason: reason.to_owned(),
        occurred_at: Some(godel_proto::convert::to_timestamp(occurred_at)),
    };
    cloud_event(
        Subject::plan(plan.team_id, name),
        EVENT_SOURCE,
        "plan",
        &plan.id.to_string(),
        occurred_at,
        &data,
    )
}

/// The `dispatch.tasks` event telling `orchestrator` which tasks it was just leased,
/// each with the epoch proving its ownership.
pub(crate) fn dispatch_event(
    orchestrator: OrchestratorId,
    tasks: &[Task],
    now: i64,
) -> Result<OutboxEvent, Error> {
    let occurred_at = time(now);
    let data = DispatchEvent {
        orchestrator_id: orchestrator.to_string(),
        tasks: tasks
            .iter()
            .map(|t| DispatchedTask {
                team_id: t.team_id.to_string(),
                task_id: t.id.to_string(),
                epoch: t.epoch,
            })
            .collect(),
        occurred_at: Some(godel_proto::convert::to_timestamp(occurred_at)),
    };
    cloud_event_named(
        Subject::dispatch(orchestrator),
        "tasks",
        EVENT_SOURCE,
        "dispatch",
        &orchestrator.to_string(),
        occurred_at,
        &data,
    )
}
