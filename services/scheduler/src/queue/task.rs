//! The queue's domain types: tasks, their states, submissions and leases, and the
//! validation of what callers submit.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_proto::scheduler::v1::TaskState as ProtoTaskState;
use godel_types::{OrchestratorId, PlanId, ProfileId, TaskId, TeamId};

use super::QueueConfig;

/// Priority of a task submitted without one.
pub const DEFAULT_PRIORITY: u8 = 50;
/// Longest accepted `task_type`, in bytes.
pub const MAX_TASK_TYPE_LEN: usize = 128;
/// Longest accepted idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// Longest accepted error code, in bytes.
pub const MAX_ERROR_CODE_LEN: usize = 128;
/// Most labels on one task.
pub const MAX_LABELS: usize = 64;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 256;
/// Most attempts a task may be given.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// Where a task is in its life. Terminal: succeeded, failed, cancelled, dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    Blocked,
    Queued,
    Leased,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    DeadLettered,
}

impl TaskState {
    /// The stored (and event subject) name, snake_case.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::DeadLettered => "dead_lettered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "blocked" => Self::Blocked,
            "queued" => Self::Queued,
            "leased" => Self::Leased,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "dead_lettered" => Self::DeadLettered,
            _ => return None,
        })
    }

    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::DeadLettered
        )
    }

    /// The `godel.scheduler.v1.TaskState` value.
    pub const fn to_proto(self) -> ProtoTaskState {
        match self {
            Self::Blocked => ProtoTaskState::Blocked,
            Self::Queued => ProtoTaskState::Queued,
            Self::Leased => ProtoTaskState::Leased,
            Self::Running => ProtoTaskState::Running,
            Self::Succeeded => ProtoTaskState::Succeeded,
            Self::Failed => ProtoTaskState::Failed,
            Self::Cancelled => ProtoTaskState::Cancelled,
            Self::DeadLettered => ProtoTaskState::DeadLettered,
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub task_type: String,
    /// 1–100; [`DEFAULT_PRIORITY`] when `None`.
    pub priority: Option<u8>,
    pub payload: serde_json::Value,
    /// Per team: a second submission with the same key returns the first task.
    pub idempotency_key: Option<String>,
    /// 1–[`MAX_ATTEMPTS_LIMIT`]; the configured default when `None`.
    pub max_attempts: Option<u32>,
    pub plan_id: Option<PlanId>,
    /// Not leased before this time; as soon as possible when `None` (or past).
    pub not_before: Option<DateTime<Utc>>,
    /// Free-form labels (at most [`MAX_LABELS`], keys and values at most
    /// [`MAX_LABEL_LEN`] bytes).
    pub labels: BTreeMap<String, String>,
    /// The agent profile to run it with; the orchestrator chooses when `None`.
    pub profile_id: Option<ProfileId>,
}

impl NewTask {
    /// A task of `task_type` with `payload` and every other setting defaulted.
    pub fn new(task_type: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            task_type: task_type.into(),
            priority: None,
            payload,
            idempotency_key: None,
            max_attempts: None,
            plan_id: None,
            not_before: None,
            labels: BTreeMap::new(),
            profile_id: None,
        }
    }

    #[must_use]
    pub fn not_before(mut self, time: DateTime<Utc>) -> Self {
        self.not_before = Some(time);
        self
    }

    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    #[must_use]
    pub fn profile(mut self, profile: ProfileId) -> Self {
        self.profile_id = Some(profile);
        self
    }

    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }
}

/// A submission that passed validation, with defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct ValidTask {
    pub task_type: String,
    pub priority: u8,
    pub payload: serde_json::Value,
    pub payload_json: String,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    pub plan_id: Option<PlanId>,
    /// Microseconds since the epoch.
    pub not_before: Option<i64>,
    pub labels_json: String,
    pub profile_id: Option<ProfileId>,
}

/// Checks `task`, naming the offending field as `<prefix>.<field>`.
pub(crate) fn validate(
    prefix: &str,
    task: NewTask,
    config: &QueueConfig,
) -> Result<ValidTask, Error> {
    let field = |name: &str| format!("{prefix}.{name}");
    let priority = task.priority.unwrap_or(DEFAULT_PRIORITY);
    if !(1..=100).contains(&priority) {
        return Err(Error::invalid_argument(
            field("priority"),
            format!("priority must be between 1 and 100, got {priority}"),
        ));
    }
    let task_type = task.task_type.trim();
    if task_type.is_empty() {
        return Err(Error::invalid_argument(
            field("task_type"),
            "task_type must not be empty",
        ));
    }
    if task_type.len() > MAX_TASK_TYPE_LEN {
        return Err(Error::invalid_argument(
            field("task_type"),
            format!("task_type must be at most {MAX_TASK_TYPE_LEN} bytes"),
        ));
    }
    let payload_json = serde_json::to_string(&task.payload).map_err(|e| {
        Error::invalid_argument(field("payload"), format!("payload is not valid JSON: {e}"))
    })?;
    if payload_json.len() > config.max_payload_bytes {
        return Err(Error::invalid_argument(
            field("payload"),
            format!(
                "payload is {} bytes; at most {} are accepted",
                payload_json.len(),
                config.max_payload_bytes
            ),
        ));
    }
    let max_attempts = task.max_attempts.unwrap_or(config.default_max_attempts);
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        return Err(Error::invalid_argument(
            field("max_attempts"),
            format!("max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {max_attempts}"),
        ));
    }
    if let Some(key) = &task.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN)
    {
        return Err(Error::invalid_argument(
            field("idempotency_key"),
            format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
        ));
    }
    if task.labels.len() > MAX_LABELS {
        return Err(Error::invalid_argument(
            field("labels"),
            format!("at most {MAX_LABELS} labels are accepted"),
        ));
    }
    for (key, value) in &task.labels {
        if key.trim().is_empty() {
            return Err(Error::invalid_argument(
                field("labels"),
                "a label key must not be empty",
            ));
        }
        if key.len() > MAX_LABEL_LEN || value.len() > MAX_LABEL_LEN {
            return Err(Error::invalid_argument(
                field(&format!("labels[{key}]")),
                format!("label keys and values must be at most {MAX_LABEL_LEN} bytes"),
            ));
        }
    }
    let labels_json = serde_json::to_string(&task.labels)
        .map_err(|_| Error::invalid_argument(field("labels"), "labels cannot be encoded"))?;
    Ok(ValidTask {
        task_type: task_type.to_owned(),
        priority,
        payload: task.payload,
        payload_json,
        idempotency_key: task.idempotency_key,
        max_attempts,
        plan_id: task.plan_id,
        not_before: task.not_before.map(|t| t.timestamp_micros()),
        labels_json,
        profile_id: task.profile_id,
    })
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: TaskId,
    pub team_id: TeamId,
    pub plan_id: Option<PlanId>,
    pub task_type: String,
    pub priority: u8,
    pub payload: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub state: TaskState,
    /// Incremented by every claim; later writes must present it.
    pub epoch: u64,
    pub lease_owner: Option<OrchestratorId>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Attempts started so far (claims).
    pub attempts: u32,
    pub max_attempts: u32,
    /// Not leased before this time (retry backoff).
    pub not_before: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub result: Option<serde_json::Value>,
    /// The task's key within its plan; `None` for a standalone task.
    pub plan_key: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub profile_id: Option<ProfileId>,
    /// Submission order.
    pub(crate) seq: i64,
}

/// A task just leased to an orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedTask {
    pub task: Task,
    /// The epoch every later write about this lease must carry.
    pub epoch: u64,
    pub lease_expires_at: DateTime<Utc>,
}

/// A completion to record with [`Queue::complete_many`](super::Queue::complete_many).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub task_id: TaskId,
    pub epoch: u64,
    pub result: serde_json::Value,
    /// When set, the completion is refused unless the task is leased to this
    /// orchestrator (checked in the completing transaction).
    pub owner: Option<OrchestratorId>,
}

/// What a failed attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again; not leased before `not_before`.
    Retrying { not_before: DateTime<Utc> },
    /// Out of attempts (or not retryable): in the dead-letter queue.
    DeadLettered,
}

/// One failed attempt of a task (or a lease that expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// The reporter's snake_case code; empty when it gave none. `lease_expired` for
    /// a lease that ran out.
    pub code: String,
    /// The orchestrator that held the lease.
    pub orchestrator_id: Option<OrchestratorId>,
    pub attempt: u32,
    pub epoch: u64,
    pub message: String,
    pub retryable: bool,
    pub occurred_at: DateTime<Utc>,
}

/// A failed attempt as its reporter describes it, for
/// [`Queue::fail_with`](super::Queue::fail_with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    /// A snake_case code (at most [`MAX_ERROR_CODE_LEN`] bytes); may be empty.
    pub code: &'a str,
    /// What went wrong, for people; must not be empty.
    pub message: &'a str,
    /// False when retrying cannot help: the task is dead-lettered at once.
    pub retryable: bool,
    /// Wait at least this long before the next attempt, even when the backoff is
    /// shorter.
    pub retry_after: Option<Duration>,
}

/// A dead-lettered task with its error history, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub task: Task,
    pub errors: Vec<TaskError>,
}

/// A team's queue settings. `None` limits fall back to the configured defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeamSettings {
    /// Share of dispatches relative to other teams (at least 1).
    pub weight: u32,
    /// Most leased or running tasks at once.
    pub max_concurrent: Option<u64>,
    /// Most queued tasks.
    pub max_queued: Option<u64>,
}

impl Default for TeamSettings {
    fn default() -> Self {
        Self {
            weight: 1,
            max_concurrent: None,
            max_queued: None,
        }
    }
}

/// Which of a team's tasks to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListTasks {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks after this id (the `next` of the previous page).
    pub after: Option<TaskId>,
    /// Page size; the configured default when 0, capped by the configured maximum.
    pub limit: usize,
    /// Only tasks of this plan.
    pub plan_id: Option<PlanId>,
    /// Only tasks of this type.
    pub task_type: Option<String>,
}

/// A page of results; `next` is the cursor of the following page, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<TaskId>,
}

/// Exponential backoff with jitter: `base · 2^(attempt-1)` capped at `max`, then a
/// uniformly random point in its upper half.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp).min(max);
    let half = full / 2;
    let jitter = rand::random_range(0..=half.as_micros().max(1) as u64);
    half + Duration::from_micros(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 1..20 {
            let d = backoff(attempt, base, max);
            let full = (base * 2u32.pow(attempt.min(10) - 1)).min(max);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn states_round_trip() {
        for s in [
            TaskState::Blocked,
            TaskState::Queued,
            TaskState::Leased,
            TaskState::Running,
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
            TaskState::DeadLettered,
        ] {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
    }
}
