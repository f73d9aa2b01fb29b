//! The durable task queue: submission (single and batched, idempotent, with
//! backpressure), listing and cancelling, claiming with weighted fair queuing across
//! teams, leases fenced by epochs, retries with backoff, the dead-letter queue and the
//! sweeper that requeues expired leases.
//!
//! The database is the truth (DESIGN.md §3 invariant 1): every state change and the
//! `task.<state>` events announcing it are written in one transaction, and the outbox
//! relay publishes the events. Lease times are read from the database's clock. Claims,
//! batched submissions and batched completions each write in one transaction.

mod depth;
mod dlq;
mod events;
mod lease;
mod metrics;
mod plans;
pub(crate) mod store;
mod task;
pub mod wfq;

use std::sync::Arc;
use std::time::Duration;

use godel_error::{Error, ErrorCode};
use godel_store::sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use godel_store::{Db, OutboxEvent, RelayNotifier};
use godel_types::{TaskId, TeamId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use crate::config::QueueConfig;
pub use events::EVENT_SOURCE;
pub use metrics::{
    COUNTED_STATES, DISPATCH_LATENCY, DISPATCHED, OLDEST_QUEUED_AGE, QUEUE_DEPTH, QueueStats,
};
pub use plans::{
    MAX_PLAN_KEY_LEN, MAX_PLAN_NAME_LEN, NewPlan, Plan, PlanDetail, PlanPage, PlanState, PlanTask,
    PlanTaskState,
};
pub use task::{
    Completion, DEFAULT_PRIORITY, DeadLetter, FailOutcome, Failure, LeasedTask, ListTasks,
    MAX_ATTEMPTS_LIMIT, MAX_ERROR_CODE_LEN, MAX_IDEMPOTENCY_KEY_LEN, MAX_LABEL_LEN, MAX_LABELS,
    MAX_TASK_TYPE_LEN, NewTask, Page, Task, TaskError, TaskState, TeamSettings,
};

use store::{TASK_COLUMNS, db_err, get, stmt};
use task::ValidTask;

/// A submitted task, and whether it was created (`false`: its idempotency key
/// matched an existing task, which is returned).
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub task: Task,
    pub created: bool,
}

/// States counted against the queued limits.
/// Largest accepted team weight.
pub const MAX_WEIGHT: u32 = 1_000;

/// The task queue over a service's database. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    db: Db,
    notifier: RelayNotifier,
    config: QueueConfig,
    changed: Arc<Notify>,
    depths: Arc<depth::Depths>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("backend", &self.db.backend())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// A queue over `db` (migrated with the scheduler's migrations); `notifier` wakes
    /// the outbox relay after each commit that wrote events.
    pub fn new(db: Db, notifier: RelayNotifier, config: QueueConfig) -> Self {
        Self {
            db,
            notifier,
            changed: Arc::new(Notify::new()),
            depths: Arc::new(depth::Depths::new(config.depth_refresh)),
            config,
        }
    }

    /// Woken after every committed state change of this replica's queue (a
    /// submission, completion, failure, requeue…): the dispatch loop waits on it so
    /// new work and freed capacity are acted on at once. Changes made through other
    /// replicas are found by the loop's polling.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn begin(&self) -> Result<DatabaseTransaction, Error> {
        self.db
            .conn()
            .begin()
            .await
            .map_err(db_err("starting a transaction"))
    }

    /// Enqueues `events` in `txn`, commits, and wakes the relay.
    async fn commit(&self, txn: DatabaseTransaction, events: &[OutboxEvent]) -> Result<(), Error> {
        if !events.is_empty() {
            godel_store::outbox::enqueue(&txn, events)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot write task events to the outbox");
                    Error::unavailable("the task store failed while writing events")
                })?;
        }
        txn.commit().await.map_err(db_err("committing"))?;
        if !events.is_empty() {
            self.notifier.notify();
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Submits one task for `team`. With an idempotency key already used by the team,
    /// returns the existing task when the payload is the same and fails with a
    /// conflict otherwise.
    pub async fn submit(&self, team: TeamId, task: NewTask) -> Result<Task, Error> {
        Ok(self.submit_one(team, task).await?.task)
    }

    /// Like [`submit`](Self::submit), also telling whether the task was created or
    /// an existing one was returned for its idempotency key.
    pub async fn submit_one(&self, team: TeamId, task: NewTask) -> Result<Submitted, Error> {
        let valid = task::validate("task", task, &self.config)?;
        let mut tasks = self.submit_valid(team, vec![valid]).await?;
        tasks
            .pop()
            .ok_or_else(|| Error::internal("a submission produced no task"))
    }

    /// Submits `tasks` for `team` in one transaction: all are accepted or none.
    /// Validation errors name the field as `tasks[i].<field>`.
    pub async fn submit_batch(
        &self,
        team: TeamId,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Task>, Error> {
        Ok(self
            .submit_many(team, tasks)
            .await?
            .into_iter()
            .map(|s| s.task)
            .collect())
    }

    /// Like [`submit_batch`](Self::submit_batch), also telling for each task whether
    /// it was created or an existing one was returned for its idempotency key.
    pub async fn submit_many(
        &self,
        team: TeamId,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Submitted>, Error> {
        if tasks.is_empty() {
            return Err(Error::invalid_argument(
                "tasks",
                "a batch needs at least one task",
            ));
        }
        let valid = tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| task::validate(&format!("tasks[{i}]"), t, &self.config))
            .collect::<Result<Vec<_>, _>>()?;
        self.submit_valid(team, valid).await
    }

    async fn submit_valid(
        &self,
        team: TeamId,
        tasks: Vec<ValidTask>,
    ) -> Result<Vec<Submitted>, Error> {
        match self.submit_valid_once(team, tasks.clone()).await {
            // A concurrent submission with the same idempotency key committed first
            // (unique violation): a second pass finds its task and returns it.
            Err(e) if e.code == ErrorCode::Aborted => self.submit_valid_once(team, tasks).await,
            other => other,
        }
    }

    async fn submit_valid_once(
        &self,
        team: TeamId,
        tasks: Vec<ValidTask>,
    ) -> Result<Vec<Submitted>, Error> {
        let txn = self.begin().await?;
        let now = store::db_now(&txn).await?;
        let (out, events) = self.submit_in(&txn, team, tasks, now).await?;
        self.commit(txn, &events).await?;
        Ok(out)
    }

    /// Submits single tasks of several callers (and teams) in one transaction, each
    /// in its own savepoint: one refused (invalid, conflicting, past a limit) is rolled
    /// back alone and gets its own error; the others commit together. Concurrent
    /// `SubmitTask` calls are grouped this way, so they share one commit. The outer
    /// error is a store failure, after which none was recorded.
    pub async fn submit_group(
        &self,
        items: Vec<(TeamId, NewTask)>,
    ) -> Result<Vec<Result<Submitted, Error>>, Error> {
        let txn = self.begin().await?;
        let now = store::db_now(&txn).await?;
        let mut outcomes = Vec::with_capacity(items.len());
        let mut events = Vec::new();
        for (team, task) in items {
            let valid = match task::validate("task", task, &self.config) {
                Ok(valid) => valid,
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            };
            let mut savepoint = txn.begin().await.map_err(db_err("starting a savepoint"))?;
            let mut result = self
                .submit_in(&savepoint, team, vec![valid.clone()], now)
                .await;
            // A concurrent submission with the same idempotency key committed first
            // (unique violation): a second pass finds its task and returns it.
            if matches!(&result, Err(e) if e.code == ErrorCode::Aborted) {
                savepoint
                    .rollback()
                    .await
                    .map_err(db_err("rolling back a savepoint"))?;
                savepoint = txn.begin().await.map_err(db_err("starting a savepoint"))?;
                result = self.submit_in(&savepoint, team, vec![valid], now).await;
            }
            match result {
                Ok((mut out, more)) => {
                    savepoint
                        .commit()
                        .await
                        .map_err(db_err("releasing a savepoint"))?;
                    events.extend(more);
                    outcomes.push(
                        out.pop()
                            .ok_or_else(|| Error::internal("a submission produced no task")),
                    );
                }
                Err(e) => {
                    savepoint
                        .rollback()
                        .await
                        .map_err(db_err("rolling back a savepoint"))?;
                    outcomes.push(Err(e));
                }
            }
        }
        self.commit(txn, &events).await?;
        Ok(outcomes)
    }

    /// The body of a submission in `txn` at `now`: what was submitted and the events
    /// to write with it.
    async fn submit_in(
        &self,
        txn: &DatabaseTransaction,
        team: TeamId,
        tasks: Vec<ValidTask>,
        now: i64,
    ) -> Result<(Vec<Submitted>, Vec<OutboxEvent>), Error> {
        // Resolve idempotency keys first, so only new tasks count against the limits.
        let mut resolved: Vec<Result<Task, ValidTask>> = Vec::with_capacity(tasks.len());
        let mut fresh = 0u64;
        for (i, t) in tasks.into_iter().enumerate() {
            let existing = match &t.idempotency_key {
                Some(key) => self.find_by_key(txn, team, key).await?,
                None => None,
            };
            match existing {
                Some(task) if task.payload == t.payload && task.task_type == t.task_type => {
                    resolved.push(Ok(task));
                }
                Some(task) => {
                    return Err(Error::conflict(format!(
                        "idempotency key {:?} was already used by task {} with a different \
                         payload",
                        t.idempotency_key.unwrap_or_default(),
                        task.id
                    ))
                    .with_field(format!("tasks[{i}].idempotency_key")));
                }
                None => {
                    // A key repeated within this batch resolves to the first use.
                    let earlier = resolved.iter().find_map(|r| match r {
                        Err(e)
                            if e.idempotency_key.is_some()
                                && e.idempotency_key == t.idempotency_key =>
                        {
                            Some(e)
                        }
                        _ => None,
                    });
                    if let Some(e) = earlier
                        && (e.payload != t.payload || e.task_type != t.task_type)
                    {
                        return Err(Error::conflict(format!(
                            "idempotency key {:?} is used twice in the batch with different \
                             payloads",
                            t.idempotency_key.unwrap_or_default()
                        ))
                        .with_field(format!("tasks[{i}].idempotency_key")));
                    }
                    if earlier.is_none() {
                        fresh += 1;
                    }
                    resolved.push(Err(t));
                }
            }
        }
        if fresh > 0 {
            self.check_backpressure(txn, team, fresh).await?;
        }
        let mut out = Vec::with_capacity(resolved.len());
        let mut events = Vec::new();
        for r in resolved {
            match r {
                Ok(task) => out.push(Submitted {
                    task,
                    created: false,
                }),
                Err(t) => {
                    let inserted = match &t.idempotency_key {
                        Some(key) => self.find_by_key(txn, team, key).await?,
                        None => None,
                    };
                    if let Some(task) = inserted {
                        out.push(Submitted {
                            task,
                            created: false,
                        });
                        continue;
                    }
                    let task = self
                        .insert(txn, team, t, TaskState::Queued, None, now)
                        .await?;
                    events.push(events::task_event(&task, None, "", now)?);
                    out.push(Submitted {
                        task,
                        created: true,
                    });
                }
            }
        }
        Ok((out, events))
    }

    async fn check_backpressure(
        &self,
        txn: &DatabaseTransaction,
        team: TeamId,
        adding: u64,
    ) -> Result<(), Error> {
        let limit = store::team_row(txn, team)
            .await?
            .and_then(|(s, _)| s.max_queued)
            .unwrap_or(self.config.max_queued_per_team);
        let over = |(queued, depth): (u64, u64)| {
            queued + adding > limit || depth + adding > self.config.max_queue_depth
        };
        let mut counts = self.depths.of(txn, team, false).await?;
        if over(counts) {
            // Refuse only on the database's current count.
            counts = self.depths.of(txn, team, true).await?;
        }
        let (queued, depth) = counts;
        let retry_after = self.config.backpressure_retry_after;
        if queued + adding > limit {
            return Err(Error::resource_exhausted(
                format!(
                    "team {team} has {queued} queued tasks; adding {adding} would pass its \
                     limit of {limit}"
                ),
                Some(retry_after),
            ));
        }
        if depth + adding > self.config.max_queue_depth {
            return Err(Error::resource_exhausted(
                format!(
                    "the queue holds {depth} tasks; adding {adding} would pass the limit of {}",
                    self.config.max_queue_depth
                ),
                Some(retry_after),
            ));
        }
        self.depths.added(team, adding);
        Ok(())
    }

    async fn find_by_key<C: ConnectionTrait>(
        &self,
        conn: &C,
        team: TeamId,
        key: &str,
    ) -> Result<Option<Task>, Error> {
        let row = conn
            .query_one_raw(stmt(
                conn,
                format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE team_id = $1 AND idempotency_key = $2"
                ),
                [team.to_string().into(), key.to_owned().into()],
            ))
            .await
            .map_err(db_err("looking up an idempotency key"))?;
        row.as_ref().map(store::task_from_row).transpose()
    }

    async fn insert(
        &self,
        txn: &DatabaseTransaction,
        team: TeamId,
        t: ValidTask,
        state: TaskState,
        plan_key: Option<&str>,
        now: i64,
    ) -> Result<Task, Error> {
        let id = TaskId::new();
        let row = txn
            .query_one_raw(stmt(
                txn,
                format!(
                    "INSERT INTO tasks (id, team_id, plan_id, task_type, priority, payload_json, \
                     idempotency_key, state, epoch, attempts, max_attempts, backoff_base_ms, \
                     backoff_max_ms, not_before, created_at, updated_at, plan_key, labels, \
                     profile_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $12, 0, 0, $8, $9, $10, \
                     $14, $11, $11, $13, $15, $16) RETURNING {TASK_COLUMNS}"
                ),
                [
                    id.to_string().into(),
                    team.to_string().into(),
                    t.plan_id.map(|p| p.to_string()).into(),
                    t.task_type.into(),
                    i32::from(t.priority).into(),
                    t.payload_json.into(),
                    t.idempotency_key.into(),
                    i64::from(t.max_attempts).into(),
                    store::micros(self.config.retry_backoff_base)
                        .div_euclid(1000)
                        .into(),
                    store::micros(self.config.retry_backoff_max)
                        .div_euclid(1000)
                        .into(),
                    now.into(),
                    state.as_str().into(),
                    plan_key.map(str::to_owned).into(),
                    t.not_before.map_or(now, |nb| nb.max(now)).into(),
                    t.labels_json.into(),
                    t.profile_id.map(|p| p.to_string()).into(),
                ],
            ))
            .await
            .map_err(db_err("inserting a task"))?
            .ok_or_else(|| Error::internal("INSERT … RETURNING returned no row"))?;
        store::task_from_row(&row)
    }

    /// The task `id` of `team`.
    pub async fn get(&self, team: TeamId, id: TaskId) -> Result<Task, Error> {
        store::load_task(self.db.conn(), id, Some(team), false)
            .await?
            .ok_or_else(|| Error::not_found(format!("task {id}")))
    }

    /// The task `id` of any team: for callers that prove their right to it otherwise
    /// (an orchestrator holding its lease).
    pub(crate) async fn get_any(&self, id: TaskId) -> Result<Task, Error> {
        store::load_task(self.db.conn(), id, None, false)
            .await?
            .ok_or_else(|| Error::not_found(format!("task {id}")))
    }

    /// A page of `team`'s tasks in id (submission time) order.
    pub async fn list(&self, team: TeamId, filter: ListTasks) -> Result<Page<Task>, Error> {
        let ListTasks {
            state,
            after,
            limit,
            plan_id,
            task_type,
        } = filter;
        let limit = match limit {
            0 => self.config.default_page_size,
            n => n.min(self.config.max_page_size),
        };
        let conn = self.db.conn();
        let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE team_id = $1");
        let mut values = vec![team.to_string().into()];
        if let Some(state) = state {
            values.push(state.as_str().into());
            sql.push_str(&format!(" AND state = ${}", values.len()));
        }
        if let Some(plan) = plan_id {
            values.push(plan.to_string().into());
            sql.push_str(&format!(" AND plan_id = ${}", values.len()));
        }
        if let Some(task_type) = task_type {
            values.push(task_type.into());
            sql.push_str(&format!(" AND task_type = ${}", values.len()));
        }
        if let Some(after) = after {
            values.push(after.to_string().into());
            sql.push_str(&format!(" AND id > ${}", values.len()));
        }
        values.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", values.len()));
        let rows = conn
            .query_all_raw(stmt(conn, sql, values))
            .await
            .map_err(db_err("listing tasks"))?;
        let mut items = store::tasks_from_rows(&rows)?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|t| t.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Cancels a task that has not finished; a lease on it becomes useless (every
    /// later write of its holder is rejected).
    pub async fn cancel(&self, team: TeamId, id: TaskId, reason: &str) -> Result<Task, Error> {
        let txn = self.begin().await?;
        let now = store::db_now(&txn).await?;
        let task = store::load_task(&txn, id, Some(team), true)
            .await?
            .ok_or_else(|| Error::not_found(format!("task {id}")))?;
        if task.state.is_terminal() {
            return Err(Error::failed_precondition(format!(
                "task {id} is already {}; only unfinished tasks can be cancelled",
                task.state
            )));
        }
        let from = task.state;
        let mut change = store::Transition::new(&task, TaskState::Cancelled, now);
        change.last_error = (!reason.is_empty()).then_some(reason);
        let task = change
            .apply(&txn)
            .await?
            .ok_or_else(|| Error::aborted(format!("task {id} changed meanwhile; retry")))?;
        let mut events = vec![events::task_event(&task, Some(from), reason, now)?];
        events.extend(plans::after_finish(&txn, std::slice::from_ref(&task), now).await?);
        self.commit(txn, &events).await?;
        Ok(task)
    }

    /// Sets `team`'s weight and limits.
    pub async fn set_team_settings(
        &self,
        team: TeamId,
        settings: TeamSettings,
    ) -> Result<(), Error> {
        if !(1..=MAX_WEIGHT).contains(&settings.weight) {
            return Err(Error::invalid_argument(
                "weight",
                format!(
                    "weight must be between 1 and {MAX_WEIGHT}, got {}",
                    settings.weight
                ),
            ));
        }
        let limit = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let conn = self.db.conn();
        conn.execute_raw(stmt(
            conn,
            "INSERT INTO team_queues (team_id, weight, max_concurrent, max_queued, finish_tag) \
             VALUES ($1, $2, $3, $4, 0.0) ON CONFLICT (team_id) DO UPDATE SET \
             weight = excluded.weight, max_concurrent = excluded.max_concurrent, \
             max_queued = excluded.max_queued",
            [
                team.to_string().into(),
                i32::try_from(settings.weight).unwrap_or(1).into(),
                limit(settings.max_concurrent).into(),
                limit(settings.max_queued).into(),
            ],
        ))
        .await
        .map_err(db_err("saving team queue settings"))?;
        Ok(())
    }

    /// `team`'s weight and limits (the defaults when never set).
    pub async fn team_settings(&self, team: TeamId) -> Result<TeamSettings, Error> {
        Ok(store::team_row(self.db.conn(), team)
            .await?
            .map(|(s, _)| s)
            .unwrap_or_default())
    }

    /// Runs [`Queue::requeue_expired`] every `sweep_interval` until `stop` is
    /// cancelled; a full batch is followed by another sweep at once.
    pub async fn run_sweeper(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            loop {
                match self.requeue_expired().await {
                    Ok(n) if n >= self.config.sweep_batch && !stop.is_cancelled() => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "sweeping expired leases failed");
                        break;
                    }
                }
            }
        }
    }
}

/// Reads the single `queue_clock` row.
async fn read_vtime<C: ConnectionTrait>(conn: &C) -> Result<f64, Error> {
    let row = conn
        .query_one_raw(stmt(conn, "SELECT vtime FROM queue_clock WHERE id = 1", []))
        .await
        .map_err(db_err("reading the queue clock"))?;
    match row {
        Some(row) => get(&row, "vtime"),
        None => Ok(0.0),
    }
}

/// How long `d` is, refusing zero.
fn positive(field: &str, d: Duration) -> Result<Duration, Error> {
    if d.is_zero() {
        return Err(Error::invalid_argument(
            field,
            format!("{field} must be positive"),
        ));
    }
    Ok(d)
}
