//! Plans: tasks with dependencies between them (a DAG), submitted in one transaction.
//! A task waits in `blocked` until every task it depends on has succeeded; the
//! transaction that records the last of those successes queues it. When a task fails
//! for good (dead-lettered or cancelled), every task depending on it, directly or not,
//! is cancelled with a reason naming it; when it failed (dead-lettered, not
//! cancelled), every other unfinished task of its plan is cancelled too, so running
//! siblings stop and the plan ends as one unit. A plan can be cancelled as a whole
//! ([`Queue::cancel_plan`]). A plan's state is derived from its tasks'.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_proto::scheduler::v1::PlanState as ProtoPlanState;
use godel_store::OutboxEvent;
use godel_store::sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult};
use godel_types::{PlanId, TaskId, TeamId};
use sha2::{Digest, Sha256};

use super::store::{self, TASK_COLUMNS, Transition, db_err, get, stmt};
use super::task::{self, MAX_IDEMPOTENCY_KEY_LEN, NewTask, Task, TaskState, ValidTask};
use super::{Queue, QueueConfig, events};

mod list;

pub use list::PlanPage;

/// Longest accepted plan name, in bytes.
pub const MAX_PLAN_NAME_LEN: usize = 256;
/// Longest accepted task key within a plan, in bytes.
pub const MAX_PLAN_KEY_LEN: usize = 128;

/// A plan as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPlan {
    /// A name for people; may be empty.
    pub name: String,
    /// Per team: a second submission with the same key returns the first plan.
    pub idempotency_key: Option<String>,
    pub tasks: Vec<PlanTask>,
}

/// One task of a plan being submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanTask {
    /// Names the task within the plan; unique in it.
    pub key: String,
    /// The task; its own idempotency key must be unset (the plan's deduplicates).
    pub task: NewTask,
    /// Keys of the tasks of this plan that must succeed before this one runs.
    pub depends_on: Vec<String>,
}

impl PlanTask {
    pub fn new(key: impl Into<String>, task: NewTask) -> Self {
        Self {
            key: key.into(),
            task,
            depends_on: Vec::new(),
        }
    }

    /// This task waits for the tasks named by `keys`.
    #[must_use]
    pub fn after<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on.extend(keys.into_iter().map(Into::into));
        self
    }
}

/// Where a plan is in its life, derived from its tasks: running while any task has
/// not finished; then succeeded when all succeeded, failed when any failed or was
/// dead-lettered, cancelled otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlanState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl PlanState {
    /// The stored (and event subject) name, snake_case.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Running)
    }

    /// The `godel.scheduler.v1.PlanState` value.
    pub const fn to_proto(self) -> ProtoPlanState {
        match self {
            Self::Running => ProtoPlanState::Running,
            Self::Succeeded => ProtoPlanState::Succeeded,
            Self::Failed => ProtoPlanState::Failed,
            Self::Cancelled => ProtoPlanState::Cancelled,
        }
    }

    /// The state of a plan whose tasks are in `states`.
    pub fn derive(states: impl IntoIterator<Item = TaskState>) -> Self {
        let (mut any, mut unfinished, mut failed, mut cancelled) = (false, false, false, false);
        for s in states {
            any = true;
            match s {
                TaskState::Succeeded => {}
                TaskState::Failed | TaskState::DeadLettered => failed = true,
                TaskState::Cancelled => cancelled = true,
                _ => unfinished = true,
            }
        }
        if unfinished || !any {
            Self::Running
        } else if failed {
            Self::Failed
        } else if cancelled {
            Self::Cancelled
        } else {
            Self::Succeeded
        }
    }
}

impl std::fmt::Display for PlanState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plan as stored, with counts derived from its tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: PlanId,
    pub team_id: TeamId,
    pub name: String,
    pub idempotency_key: Option<String>,
    pub state: PlanState,
    pub task_count: u32,
    pub succeeded_count: u32,
    /// Failed or dead-lettered tasks.
    pub failed_count: u32,
    pub cancelled_count: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the plan reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A task of a plan with the tasks it waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanTaskState {
    pub task: Task,
    pub depends_on: Vec<TaskId>,
}

/// A plan and its tasks, each with its dependencies, in submission order.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanDetail {
    pub plan: Plan,
    pub tasks: Vec<PlanTaskState>,
}

/// A plan that passed validation.
struct ValidPlan {
    name: String,
    idempotency_key: Option<String>,
    fingerprint: String,
    /// Key, task, indices of the tasks it depends on.
    tasks: Vec<(String, ValidTask, Vec<usize>)>,
}

/// Checks `plan`: its size against the configured limit, each task, unique keys, known
/// references and the absence of cycles. Errors name the field (`tasks[i].…`).
fn validate_plan(plan: NewPlan, config: &QueueConfig) -> Result<ValidPlan, Error> {
    let name = plan.name.trim().to_owned();
    if name.len() > MAX_PLAN_NAME_LEN {
        return Err(Error::invalid_argument(
            "name",
            format!("name must be at most {MAX_PLAN_NAME_LEN} bytes"),
        ));
    }
    if let Some(key) = &plan.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN)
    {
        return Err(Error::invalid_argument(
            "idempotency_key",
            format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
        ));
    }
    if plan.tasks.is_empty() {
        return Err(Error::invalid_argument(
            "tasks",
            "a plan needs at least one task",
        ));
    }
    if plan.tasks.len() > config.max_plan_tasks {
        return Err(Error::invalid_argument(
            "tasks",
            format!(
                "a plan may have at most {} tasks, got {}",
                config.max_plan_tasks,
                plan.tasks.len()
            ),
        ));
    }
    let mut index: HashMap<String, usize> = HashMap::with_capacity(plan.tasks.len());
    for (i, t) in plan.tasks.iter().enumerate() {
        let field = format!("tasks[{i}].key");
        if t.key.is_empty() || t.key.len() > MAX_PLAN_KEY_LEN {
            return Err(Error::invalid_argument(
                field,
                format!("key must be 1 to {MAX_PLAN_KEY_LEN} bytes"),
            ));
        }
        if let Some(j) = index.insert(t.key.clone(), i) {
            return Err(Error::invalid_argument(
                field,
                format!("key {:?} is already used by tasks[{j}]", t.key),
            ));
        }
    }
    let mut tasks = Vec::with_capacity(plan.tasks.len());
    for (i, t) in plan.tasks.into_iter().enumerate() {
        if t.task.idempotency_key.is_some() {
            return Err(Error::invalid_argument(
                format!("tasks[{i}].task.idempotency_key"),
                "tasks of a plan are deduplicated by the plan's idempotency_key; leave theirs \
                 empty",
            ));
        }
        let mut deps = BTreeSet::new();
        for (j, dep) in t.depends_on.iter().enumerate() {
            let field = format!("tasks[{i}].depends_on[{j}]");
            let Some(&d) = index.get(dep) else {
                return Err(Error::invalid_argument(
                    field,
                    format!("no task of the plan has the key {dep:?}"),
                ));
            };
            if d == i {
                return Err(Error::invalid_argument(
                    field,
                    format!("task {dep:?} depends on itself"),
                ));
            }
            deps.insert(d);
        }
        let valid = task::validate(&format!("tasks[{i}].task"), t.task, config)?;
        tasks.push((t.key, valid, deps.into_iter().collect::<Vec<_>>()));
    }
    if let Some(cycle) = find_cycle(&tasks) {
        let first = cycle.first().copied().unwrap_or(0);
        let names = cycle
            .iter()
            .chain(cycle.first())
            .filter_map(|i| tasks.get(*i).map(|t| format!("{:?}", t.0)))
            .collect::<Vec<_>>()
            .join(" -> ");
        let key = tasks.get(first).map(|t| t.0.as_str()).unwrap_or_default();
        return Err(Error::invalid_argument(
            format!("tasks[{first}].depends_on"),
            format!("task {key:?} is on a dependency cycle: {names}"),
        ));
    }
    let fingerprint = {
        let canonical = serde_json::json!({
            "name": name,
            "tasks": tasks.iter().map(|(key, t, deps)| serde_json::json!({
                "key": key,
                "task_type": t.task_type,
                "priority": t.priority,
                "payload": t.payload,
                "max_attempts": t.max_attempts,
                "not_before": t.not_before,
                "labels": t.labels_json,
                "profile_id": t.profile_id.map(|p| p.to_string()),
                "depends_on": deps,
            })).collect::<Vec<_>>(),
        });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    };
    Ok(ValidPlan {
        name,
        idempotency_key: plan.idempotency_key,
        fingerprint,
        tasks,
    })
}

/// A cycle among `tasks` (indices, each depending on the next, the last on the
/// first), if there is one.
fn find_cycle(tasks: &[(String, ValidTask, Vec<usize>)]) -> Option<Vec<usize>> {
    // Kahn's algorithm: what cannot be ordered lies on or behind a cycle.
    let n = tasks.len();
    let mut waiting: Vec<usize> = tasks.iter().map(|t| t.2.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, t) in tasks.iter().enumerate() {
        for &d in &t.2 {
            if let Some(list) = dependents.get_mut(d) {
                list.push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|i| waiting[*i] == 0).collect();
    let mut ordered = vec![false; n];
    while let Some(i) = ready.pop() {
        ordered[i] = true;
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    // Every unordered task depends on another unordered one: follow those edges until
    // one repeats.
    let start = (0..n).find(|i| !ordered[*i])?;
    let mut path = vec![start];
    let mut seen_at: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut at = start;
    loop {
        let next = *tasks[at].2.iter().find(|d| !ordered[**d])?;
        if let Some(&pos) = seen_at.get(&next) {
            return Some(path.split_off(pos));
        }
        seen_at.insert(next, path.len());
        path.push(next);
        at = next;
    }
}

impl Queue {
    /// Submits a plan for `team` in one transaction: its tasks (`blocked` when they
    /// depend on others, `queued` otherwise) and their dependency edges, with a
    /// `task.<state>` event per task and a `plan.submitted` event. With an idempotency
    /// key already used by the team, returns the existing plan (and `false`) when the
    /// submission is the same, and fails with a conflict otherwise.
    pub async fn submit_plan(
        &self,
        team: TeamId,
        plan: NewPlan,
    ) -> Result<(PlanDetail, bool), Error> {
        let valid = validate_plan(plan, &self.config)?;
        let txn = self.begin().await?;
        if let Some(key) = &valid.idempotency_key {
            let row = txn
                .query_one_raw(stmt(
                    &txn,
                    "SELECT id, fingerprint FROM plans WHERE team_id = $1 AND idempotency_key = $2",
                    [team.to_string().into(), key.clone().into()],
                ))
                .await
                .map_err(db_err("looking up a plan's idempotency key"))?;
            if let Some(row) = row {
                let id: PlanId = store::parse_id("plans.id", &get::<String>(&row, "id")?)?;
                if get::<String>(&row, "fingerprint")? != valid.fingerprint {
                    return Err(Error::conflict(format!(
                        "idempotency key {key:?} was already used by plan {id} with different \
                         tasks"
                    ))
                    .with_field("idempotency_key"));
                }
                let detail = load_plan(&txn, team, id).await?;
                txn.commit().await.map_err(db_err("committing"))?;
                return Ok((detail, false));
            }
        }
        let count = u64::try_from(valid.tasks.len()).unwrap_or(u64::MAX);
        self.check_backpressure(&txn, team, count).await?;
        let now = store::db_now(&txn).await?;
        let plan_id = PlanId::new();
        txn.execute_raw(stmt(
            &txn,
            "INSERT INTO plans (id, team_id, name, idempotency_key, fingerprint, state, \
             created_at, updated_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, NULL)",
            [
                plan_id.to_string().into(),
                team.to_string().into(),
                valid.name.clone().into(),
                valid.idempotency_key.clone().into(),
                valid.fingerprint.into(),
                PlanState::Running.as_str().into(),
                now.into(),
            ],
        ))
        .await
        .map_err(db_err("inserting a plan"))?;
        let mut events = Vec::with_capacity(valid.tasks.len() + 1);
        let mut inserted: Vec<(Task, Vec<usize>)> = Vec::with_capacity(valid.tasks.len());
        for (key, mut t, deps) in valid.tasks {
            t.plan_id = Some(plan_id);
            let state = if deps.is_empty() {
                TaskState::Queued
            } else {
                TaskState::Blocked
            };
            let task = self.insert(&txn, team, t, state, Some(&key), now).await?;
            events.push(events::task_event(&task, None, "", now)?);
            inserted.push((task, deps));
        }
        let ids: Vec<TaskId> = inserted.iter().map(|(t, _)| t.id).collect();
        let mut tasks = Vec::with_capacity(inserted.len());
        for (task, deps) in inserted {
            let depends_on: Vec<TaskId> =
                deps.iter().filter_map(|d| ids.get(*d).copied()).collect();
            for dep in &depends_on {
                txn.execute_raw(stmt(
                    &txn,
                    "INSERT INTO task_dependencies (task_id, depends_on, plan_id) \
                     VALUES ($1, $2, $3)",
                    [
                        task.id.to_string().into(),
                        dep.to_string().into(),
                        plan_id.to_string().into(),
                    ],
                ))
                .await
                .map_err(db_err("inserting a task dependency"))?;
            }
            tasks.push(PlanTaskState { task, depends_on });
        }
        let plan = plan_from_parts(
            PlanRow {
                id: plan_id,
                team_id: team,
                name: valid.name,
                idempotency_key: valid.idempotency_key,
                stored_state: PlanState::Running,
                created_at: now,
                updated_at: now,
                finished_at: None,
            },
            tasks.iter().map(|t| t.task.state),
        );
        events.push(events::plan_event(&plan, None, "", now)?);
        self.commit(txn, &events).await?;
        Ok((PlanDetail { plan, tasks }, true))
    }

    /// The plan `id` of `team` with its tasks in submission order; its state and
    /// counts are derived from its tasks'.
    pub async fn get_plan(&self, team: TeamId, id: PlanId) -> Result<PlanDetail, Error> {
        load_plan(self.db.conn(), team, id).await
    }

    /// Cancels every unfinished task of `team`'s plan `id` (blocked, queued, leased,
    /// running) with `reason`, in one transaction, with a `task.cancelled` event per
    /// task and the `plan.<state>` event; a lease on one of them becomes useless.
    /// Idempotent: a plan whose tasks all finished is returned as it is.
    pub async fn cancel_plan(&self, team: TeamId, id: PlanId, reason: &str) -> Result<Plan, Error> {
        let reason = if reason.trim().is_empty() {
            "the plan was cancelled"
        } else {
            reason
        };
        let txn = self.begin().await?;
        let now = store::db_now(&txn).await?;
        let exists = txn
            .query_one_raw(stmt(
                &txn,
                "SELECT id FROM plans WHERE id = $1 AND team_id = $2",
                [id.to_string().into(), team.to_string().into()],
            ))
            .await
            .map_err(db_err("reading a plan"))?;
        if exists.is_none() {
            return Err(Error::not_found(format!("plan {id}")));
        }
        let mut events = cancel_unfinished(&txn, id, reason, now).await?;
        if let Some(event) = settle_plan(&txn, id, reason, now).await? {
            events.push(event);
        }
        self.commit(txn, &events).await?;
        Ok(load_plan(self.db.conn(), team, id).await?.plan)
    }

    /// The ids of the tasks the task `id` of `team` waits for (empty for a standalone
    /// task).
    pub async fn dependencies(&self, team: TeamId, id: TaskId) -> Result<Vec<TaskId>, Error> {
        let conn = self.db.conn();
        store::load_task(conn, id, Some(team), false)
            .await?
            .ok_or_else(|| Error::not_found(format!("task {id}")))?;
        dependencies_of(conn, id).await
    }
}

/// A `plans` row.
struct PlanRow {
    id: PlanId,
    team_id: TeamId,
    name: String,
    idempotency_key: Option<String>,
    stored_state: PlanState,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

const PLAN_COLUMNS: &str =
    "id, team_id, name, idempotency_key, state, created_at, updated_at, finished_at";

fn plan_row(row: &QueryResult) -> Result<PlanRow, Error> {
    let state: String = get(row, "state")?;
    Ok(PlanRow {
        id: store::parse_id("plans.id", &get::<String>(row, "id")?)?,
        team_id: store::parse_id("plans.team_id", &get::<String>(row, "team_id")?)?,
        name: get(row, "name")?,
        idempotency_key: get(row, "idempotency_key")?,
        stored_state: PlanState::parse(&state)
            .ok_or_else(|| store::corrupt("plans.state", &state))?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        finished_at: get(row, "finished_at")?,
    })
}

/// The plan of `row` with its state and counts derived from its tasks' `states`.
fn plan_from_parts(row: PlanRow, states: impl IntoIterator<Item = TaskState>) -> Plan {
    let states: Vec<TaskState> = states.into_iter().collect();
    let count = |f: fn(TaskState) -> bool| {
        u32::try_from(states.iter().filter(|s| f(**s)).count()).unwrap_or(u32::MAX)
    };
    Plan {
        id: row.id,
        team_id: row.team_id,
        name: row.name,
        idempotency_key: row.idempotency_key,
        state: PlanState::derive(states.iter().copied()),
        task_count: u32::try_from(states.len()).unwrap_or(u32::MAX),
        succeeded_count: count(|s| s == TaskState::Succeeded),
        failed_count: count(|s| matches!(s, TaskState::Failed | TaskState::DeadLettered)),
        cancelled_count: count(|s| s == TaskState::Cancelled),
        created_at: store::time(row.created_at),
        updated_at: store::time(row.updated_at),
        finished_at: row.finished_at.map(store::time),
    }
}

async fn load_plan<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
    id: PlanId,
) -> Result<PlanDetail, Error> {
    let row = conn
        .query_one_raw(stmt(
            conn,
            format!("SELECT {PLAN_COLUMNS} FROM plans WHERE id = $1 AND team_id = $2"),
            [id.to_string().into(), team.to_string().into()],
        ))
        .await
        .map_err(db_err("reading a plan"))?
        .ok_or_else(|| Error::not_found(format!("plan {id}")))?;
    let row = plan_row(&row)?;
    let rows = conn
        .query_all_raw(stmt(
            conn,
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE plan_id = $1 ORDER BY seq"),
            [id.to_string().into()],
        ))
        .await
        .map_err(db_err("reading a plan's tasks"))?;
    let tasks = store::tasks_from_rows(&rows)?;
    let edges = conn
        .query_all_raw(stmt(
            conn,
            "SELECT task_id, depends_on FROM task_dependencies WHERE plan_id = $1",
            [id.to_string().into()],
        ))
        .await
        .map_err(db_err("reading a plan's dependencies"))?;
    let mut deps: HashMap<TaskId, Vec<TaskId>> = HashMap::new();
    for edge in &edges {
        let task: TaskId = store::parse_id("task_id", &get::<String>(edge, "task_id")?)?;
        let on: TaskId = store::parse_id("depends_on", &get::<String>(edge, "depends_on")?)?;
        deps.entry(task).or_default().push(on);
    }
    let plan = plan_from_parts(row, tasks.iter().map(|t| t.state));
    let position: HashMap<TaskId, usize> =
        tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let tasks = tasks
        .into_iter()
        .map(|task| {
            let mut depends_on = deps.remove(&task.id).unwrap_or_default();
            depends_on.sort_by_key(|id| position.get(id).copied().unwrap_or(usize::MAX));
            PlanTaskState { task, depends_on }
        })
        .collect();
    Ok(PlanDetail { plan, tasks })
}

/// The ids of the tasks `task` waits for.
async fn dependencies_of<C: ConnectionTrait>(conn: &C, task: TaskId) -> Result<Vec<TaskId>, Error> {
    let rows = conn
        .query_all_raw(stmt(
            conn,
            "SELECT task_dependencies.depends_on FROM task_dependencies JOIN tasks ON \
             tasks.id = task_dependencies.depends_on WHERE task_dependencies.task_id = $1 \
             ORDER BY tasks.seq",
            [task.to_string().into()],
        ))
        .await
        .map_err(db_err("reading a task's dependencies"))?;
    rows.iter()
        .map(|r| store::parse_id("depends_on", &get::<String>(r, "depends_on")?))
        .collect()
}

/// What follows, in the same transaction, from plan tasks having just reached a
/// terminal state (`finished`, as they are now): dependents whose dependencies all
/// succeeded are queued; the transitive dependents of a task that failed for good are
/// cancelled; a plan that thereby finished records its state. Returns the events.
pub(crate) async fn after_finish(
    txn: &DatabaseTransaction,
    finished: &[Task],
    now: i64,
) -> Result<Vec<OutboxEvent>, Error> {
    let mut events = Vec::new();
    let mut plans: BTreeSet<PlanId> = BTreeSet::new();
    let mut failed: Vec<(TaskId, String)> = Vec::new();
    // Plans with a task that failed for good, and why: the rest of each is cancelled.
    let mut broken: Vec<(PlanId, String)> = Vec::new();
    for t in finished {
        let Some(plan) = t.plan_id else { continue };
        plans.insert(plan);
        match t.state {
            TaskState::Succeeded => {
                for dependent in blocked_dependents(txn, t.id).await? {
                    if !unfinished_dependencies(txn, dependent.id).await? {
                        let mut change = Transition::new(&dependent, TaskState::Queued, now);
                        // The submitter's not-before time still holds.
                        change.not_before = Some(dependent.not_before.timestamp_micros().max(now));
                        if let Some(queued) = change.apply(txn).await? {
                            events.push(events::task_event(
                                &queued,
                                Some(TaskState::Blocked),
                                "dependencies succeeded",
                                now,
                            )?);
                        }
                    }
                }
            }
            TaskState::Failed | TaskState::Cancelled | TaskState::DeadLettered => {
                let key = t.plan_key.as_deref().unwrap_or_default();
                failed.push((
                    t.id,
                    format!("dependency {} ({key:?}) was {}", t.id, t.state),
                ));
                if t.state != TaskState::Cancelled && !broken.iter().any(|(p, _)| *p == plan) {
                    broken.push((
                        plan,
                        format!("{} ({key:?}) failed for good", sibling_reason_prefix(t.id)),
                    ));
                }
            }
            _ => {}
        }
    }
    while let Some((id, reason)) = failed.pop() {
        for dependent in blocked_dependents(txn, id).await? {
            let mut change = Transition::new(&dependent, TaskState::Cancelled, now);
            change.last_error = Some(&reason);
            if let Some(cancelled) = change.apply(txn).await? {
                events.push(events::task_event(
                    &cancelled,
                    Some(TaskState::Blocked),
                    &reason,
                    now,
                )?);
                failed.push((cancelled.id, reason.clone()));
            }
        }
    }
    // Dependents first (their reason names the dependency, so a requeue of it
    // revives them), then every other unfinished task of a plan that failed.
    for (plan, reason) in &broken {
        events.extend(cancel_unfinished(txn, *plan, reason, now).await?);
    }
    for plan in plans {
        let reason = broken
            .iter()
            .find(|(p, _)| *p == plan)
            .map_or("", |(_, reason)| reason.as_str());
        if let Some(event) = settle_plan(txn, plan, reason, now).await? {
            events.push(event);
        }
    }
    Ok(events)
}

/// How the reason of a task cancelled because `failed` (of its plan) failed for good
/// starts; a requeue of `failed` finds them by it.
fn sibling_reason_prefix(failed: TaskId) -> String {
    format!("plan task {failed}")
}

/// The cancelled tasks of `plan`, locked on PostgreSQL.
async fn cancelled_of_plan(txn: &DatabaseTransaction, plan: PlanId) -> Result<Vec<Task>, Error> {
    let rows = txn
        .query_all_raw(stmt(
            txn,
            format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE plan_id = $1 AND state = 'cancelled' \
                 ORDER BY seq{}",
                store::for_update(txn, false)
            ),
            [plan.to_string().into()],
        ))
        .await
        .map_err(db_err("finding a plan's cancelled tasks"))?;
    store::tasks_from_rows(&rows)
}

/// Cancels every unfinished task of `plan` (blocked, queued, leased, running) with
/// `reason`; returns their `task.cancelled` events. Tasks are locked in submission
/// order.
async fn cancel_unfinished(
    txn: &DatabaseTransaction,
    plan: PlanId,
    reason: &str,
    now: i64,
) -> Result<Vec<OutboxEvent>, Error> {
    let rows = txn
        .query_all_raw(stmt(
            txn,
            format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE plan_id = $1 AND state IN \
                 ('blocked', 'queued', 'leased', 'running') ORDER BY seq{}",
                store::for_update(txn, false)
            ),
            [plan.to_string().into()],
        ))
        .await
        .map_err(db_err("finding a plan's unfinished tasks"))?;
    let mut events = Vec::new();
    for task in store::tasks_from_rows(&rows)? {
        let mut change = Transition::new(&task, TaskState::Cancelled, now);
        change.last_error = Some(reason);
        if let Some(cancelled) = change.apply(txn).await? {
            events.push(events::task_event(
                &cancelled,
                Some(task.state),
                reason,
                now,
            )?);
        }
    }
    Ok(events)
}

/// What follows from `task` (a plan task) being requeued from the dead-letter queue:
/// the dependents cancelled because it failed for good — directly or through another
/// cancelled dependent, their last error naming it — are blocked again, waiting for
/// it; the other tasks of the plan cancelled because it failed are queued again (or
/// blocked while a dependency has not succeeded); the plan is open again. Tasks
/// cancelled for any other reason stay cancelled. Returns the events.
pub(crate) async fn after_requeue(
    txn: &DatabaseTransaction,
    task: &Task,
    now: i64,
) -> Result<Vec<OutboxEvent>, Error> {
    let Some(plan) = task.plan_id else {
        return Ok(Vec::new());
    };
    let marker = format!("dependency {} ", task.id);
    let reason = format!(
        "dependency {} was requeued from the dead-letter queue",
        task.id
    );
    let mut events = Vec::new();
    let mut revived = vec![task.id];
    // The rest of the plan, cancelled because this task failed for good, is back:
    // queued, or blocked while a dependency has not succeeded.
    let sibling_marker = format!("{} ", sibling_reason_prefix(task.id));
    for sibling in cancelled_of_plan(txn, plan).await? {
        let cancelled_by_it = sibling
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(&sibling_marker));
        if !cancelled_by_it {
            continue;
        }
        let to = if unfinished_dependencies(txn, sibling.id).await? {
            TaskState::Blocked
        } else {
            TaskState::Queued
        };
        let mut change = Transition::new(&sibling, to, now);
        if to == TaskState::Queued {
            change.not_before = Some(sibling.not_before.timestamp_micros().max(now));
        }
        if let Some(back) = change.apply(txn).await? {
            events.push(events::task_event(
                &back,
                Some(TaskState::Cancelled),
                &reason,
                now,
            )?);
            revived.push(back.id);
        }
    }
    while let Some(id) = revived.pop() {
        for dependent in dependents_in(txn, id, TaskState::Cancelled).await? {
            let cancelled_by_it = dependent
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(&marker));
            if !cancelled_by_it {
                continue;
            }
            let change = Transition::new(&dependent, TaskState::Blocked, now);
            if let Some(blocked) = change.apply(txn).await? {
                events.push(events::task_event(
                    &blocked,
                    Some(TaskState::Cancelled),
                    &reason,
                    now,
                )?);
                revived.push(blocked.id);
            }
        }
    }
    if let Some(event) = settle_plan(txn, plan, &reason, now).await? {
        events.push(event);
    }
    Ok(events)
}

/// The blocked tasks waiting for `task`, locked on PostgreSQL.
async fn blocked_dependents(txn: &DatabaseTransaction, task: TaskId) -> Result<Vec<Task>, Error> {
    dependents_in(txn, task, TaskState::Blocked).await
}

/// The tasks in `state` that depend on `task`, locked on PostgreSQL.
async fn dependents_in(
    txn: &DatabaseTransaction,
    task: TaskId,
    state: TaskState,
) -> Result<Vec<Task>, Error> {
    let rows = txn
        .query_all_raw(stmt(
            txn,
            format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN (SELECT task_id FROM \
                 task_dependencies WHERE depends_on = $1) AND state = $2 ORDER BY seq{}",
                store::for_update(txn, false)
            ),
            [task.to_string().into(), state.as_str().into()],
        ))
        .await
        .map_err(db_err("finding a task's dependents"))?;
    store::tasks_from_rows(&rows)
}

/// Whether some task `task` waits for has not succeeded. Run after locking `task`, so
/// of two transactions completing its last two dependencies, the second to lock it
/// sees the first's success.
async fn unfinished_dependencies(txn: &DatabaseTransaction, task: TaskId) -> Result<bool, Error> {
    let row = txn
        .query_one_raw(stmt(
            txn,
            "SELECT COUNT(*) AS n FROM tasks WHERE id IN (SELECT depends_on FROM \
             task_dependencies WHERE task_id = $1) AND state <> 'succeeded'",
            [task.to_string().into()],
        ))
        .await
        .map_err(db_err("counting unfinished dependencies"))?
        .ok_or_else(|| Error::internal("COUNT returned no row"))?;
    Ok(get::<i64>(&row, "n")? > 0)
}

/// Records the derived state of `plan` when it changed; returns the `plan.<state>`
/// event (with `reason`) when the plan just reached a terminal state. The plan row is
/// locked first, so of concurrent transactions finishing its last tasks, the last
/// sees them all.
async fn settle_plan(
    txn: &DatabaseTransaction,
    plan: PlanId,
    reason: &str,
    now: i64,
) -> Result<Option<OutboxEvent>, Error> {
    let row = txn
        .query_one_raw(stmt(
            txn,
            format!(
                "SELECT {PLAN_COLUMNS} FROM plans WHERE id = $1{}",
                store::for_update(txn, false)
            ),
            [plan.to_string().into()],
        ))
        .await
        .map_err(db_err("reading a plan"))?;
    let Some(row) = row else { return Ok(None) };
    let row = plan_row(&row)?;
    let rows = txn
        .query_all_raw(stmt(
            txn,
            "SELECT state FROM tasks WHERE plan_id = $1",
            [plan.to_string().into()],
        ))
        .await
        .map_err(db_err("reading a plan's task states"))?;
    let states = rows
        .iter()
        .map(|r| {
            let s: String = get(r, "state")?;
            TaskState::parse(&s).ok_or_else(|| store::corrupt("state", &s))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let from = row.stored_state;
    let mut current = plan_from_parts(row, states);
    if current.state == from {
        return Ok(None);
    }
    let finished_at = current.state.is_terminal().then_some(now);
    txn.execute_raw(stmt(
        txn,
        "UPDATE plans SET state = $1, updated_at = $2, finished_at = $3 WHERE id = $4",
        [
            current.state.as_str().into(),
            now.into(),
            finished_at.into(),
            plan.to_string().into(),
        ],
    ))
    .await
    .map_err(db_err("updating a plan"))?;
    current.updated_at = store::time(now);
    current.finished_at = finished_at.map(store::time);
    if !current.state.is_terminal() {
        return Ok(None);
    }
    Ok(Some(events::plan_event(&current, Some(from), reason, now)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(edges: &[(&str, &[&str])]) -> NewPlan {
        NewPlan {
            name: "p".to_owned(),
            idempotency_key: None,
            tasks: edges
                .iter()
                .map(|(k, deps)| {
                    PlanTask::new(*k, NewTask::new("t", serde_json::json!({})))
                        .after(deps.iter().copied())
                })
                .collect(),
        }
    }

    #[test]
    fn cycles_are_found_and_named() {
        let config = QueueConfig::default();
        let err = validate_plan(
            plan(&[("a", &[]), ("b", &["a", "d"]), ("c", &["b"]), ("d", &["c"])]),
            &config,
        )
        .err()
        .map(|e| (e.field, e.message));
        let (field, message) = err.unwrap_or_default();
        assert!(
            matches!(
                field.as_deref(),
                Some("tasks[1].depends_on" | "tasks[2].depends_on" | "tasks[3].depends_on")
            ),
            "{field:?}"
        );
        assert!(message.contains("cycle"), "{message}");
        assert!(!message.contains("\"a\""), "{message}");
        assert!(
            validate_plan(
                plan(&[("a", &[]), ("b", &["a"]), ("c", &["a", "b"])]),
                &config
            )
            .is_ok()
        );
    }

    #[test]
    fn derived_states() {
        use TaskState::*;
        assert_eq!(PlanState::derive([Succeeded, Queued]), PlanState::Running);
        assert_eq!(
            PlanState::derive([Succeeded, Succeeded]),
            PlanState::Succeeded
        );
        assert_eq!(
            PlanState::derive([DeadLettered, Cancelled]),
            PlanState::Failed
        );
        assert_eq!(
            PlanState::derive([Succeeded, Cancelled]),
            PlanState::Cancelled
        );
    }
}
