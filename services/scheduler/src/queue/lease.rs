//! Claiming (weighted fair queuing across teams, one transaction per batch), and the
//! writes of a lease holder — heartbeat, complete, fail — each fenced by the epoch the
//! claim handed out and by the lease's expiry on the database clock. Also the sweeper
//! that requeues expired leases.

use std::collections::HashMap;
use std::time::Duration;

use godel_error::Error;
use godel_store::sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend};
use godel_types::{OrchestratorId, TaskId, TeamId};

use super::store::{self, TASK_COLUMNS, Transition, db_err, get, stmt};
use super::task::{
    self, Completion, FailOutcome, Failure, LeasedTask, MAX_ERROR_CODE_LEN, Task, TaskState,
};
use super::wfq::{Candidate, FairQueue, Lane};
use super::{Queue, events, metrics, plans, positive, read_vtime};
use crate::leader::Term;

/// First half of the PostgreSQL advisory-lock key that serializes claims (the second
/// is the schema's hash), so the WFQ clock and per-team limits see one claim at a time.
const CLAIM_LOCK_CLASS: i32 = 0x6764_7101;

const ACTIVE: [TaskState; 2] = [TaskState::Leased, TaskState::Running];
/// Rows per set-based statement (three parameters each, well under every limit).
const SET_CHUNK: usize = 500;

impl Queue {
    /// Leases up to `max` ready tasks to `orchestrator` for `lease_duration`, in one
    /// transaction. Ready: queued, `not_before` passed (database time), and the team
    /// under its concurrency limit. Order: weighted fair queuing across teams, then
    /// priority, then FIFO. Each claimed task's epoch and attempt count go up by one.
    pub async fn lease(
        &self,
        orchestrator: OrchestratorId,
        max: usize,
        lease_duration: Duration,
    ) -> Result<Vec<LeasedTask>, Error> {
        self.lease_in(orchestrator, max, lease_duration, None).await
    }

    /// Like [`lease`](Self::lease), made by the dispatch loop's leader in `term`: the
    /// claim is refused unless `term` still holds the leadership, and a
    /// `dispatch.tasks` event naming the leased tasks and their epochs is written to
    /// the outbox in the same transaction, so the orchestrator hears of exactly what
    /// was committed.
    pub async fn dispatch(
        &self,
        orchestrator: OrchestratorId,
        max: usize,
        lease_duration: Duration,
        term: &Term,
    ) -> Result<Vec<LeasedTask>, Error> {
        self.lease_in(orchestrator, max, lease_duration, Some(term))
            .await
    }

    async fn lease_in(
        &self,
        orchestrator: OrchestratorId,
        max: usize,
        lease_duration: Duration,
        term: Option<&Term>,
    ) -> Result<Vec<LeasedTask>, Error> {
        let lease_duration = positive("lease_duration", lease_duration)?;
        let max = max.min(self.config.max_lease_batch);
        if max == 0 {
            return Ok(Vec::new());
        }
        let txn = self.begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_raw(stmt(
                &txn,
                "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
                [CLAIM_LOCK_CLASS.into()],
            ))
            .await
            .map_err(db_err("taking the claim lock"))?;
        }
        let now = store::db_now(&txn).await?;
        if let Some(term) = term {
            term.check(&txn, now).await?;
        }
        let (teams, mut fq) = self.load_lanes(&txn, max, now).await?;
        let mut picked: Vec<i64> = Vec::with_capacity(max);
        let mut touched = vec![false; teams.len()];
        while picked.len() < max {
            let Some((lane, c)) = fq.pick() else { break };
            if let Some(t) = touched.get_mut(lane) {
                *t = true;
            }
            picked.push(c.key);
        }
        if picked.is_empty() {
            txn.commit().await.map_err(db_err("committing"))?;
            return Ok(Vec::new());
        }
        for ((team, lane), touched) in teams.iter().zip(fq.lanes()).zip(&touched) {
            if *touched {
                save_finish_tag(&txn, *team, lane.finish()).await?;
            }
        }
        txn.execute_raw(stmt(
            &txn,
            "UPDATE queue_clock SET vtime = $1 WHERE id = 1",
            [fq.vtime().into()],
        ))
        .await
        .map_err(db_err("advancing the queue clock"))?;

        let expires = now.saturating_add(store::micros(lease_duration));
        let mut values = vec![orchestrator.to_string().into(), expires.into(), now.into()];
        values.extend(picked.iter().map(|seq| (*seq).into()));
        let rows = txn
            .query_all_raw(stmt(
                &txn,
                format!(
                    "UPDATE tasks SET state = 'leased', epoch = epoch + 1, attempts = attempts + 1, \
                     lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
                     WHERE state = 'queued' AND seq IN ({}) RETURNING {TASK_COLUMNS}",
                    store::placeholders(4, picked.len())
                ),
                values,
            ))
            .await
            .map_err(db_err("leasing tasks"))?;
        let order: HashMap<i64, usize> = picked.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let mut tasks = store::tasks_from_rows(&rows)?;
        tasks.sort_by_key(|t| order.get(&t.seq).copied().unwrap_or(usize::MAX));
        let mut events = tasks
            .iter()
            .map(|t| events::task_event(t, Some(TaskState::Queued), "", now))
            .collect::<Result<Vec<_>, _>>()?;
        if term.is_some() {
            events.push(events::dispatch_event(orchestrator, &tasks, now)?);
        }
        self.commit(txn, &events).await?;
        let leased: Vec<LeasedTask> = tasks
            .into_iter()
            .map(|task| LeasedTask {
                epoch: task.epoch,
                lease_expires_at: store::time(expires),
                task,
            })
            .collect();
        metrics::record_dispatch(&leased, now);
        Ok(leased)
    }

    /// One lane per team with ready tasks and room under its concurrency limit,
    /// holding at most `max` of its best ready tasks (locked on PostgreSQL).
    async fn load_lanes(
        &self,
        txn: &DatabaseTransaction,
        max: usize,
        now: i64,
    ) -> Result<(Vec<TeamId>, FairQueue<i64>), Error> {
        let rows = txn
            .query_all_raw(stmt(
                txn,
                "SELECT DISTINCT team_id FROM tasks WHERE state = 'queued' AND not_before <= $1",
                [now.into()],
            ))
            .await
            .map_err(db_err("finding teams with ready tasks"))?;
        let mut team_ids = rows
            .iter()
            .map(|r| {
                let s: String = get(r, "team_id")?;
                s.parse::<TeamId>().map_err(|_| {
                    Error::internal(format!("corrupt team id {s:?} in the task store"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        team_ids.sort();
        let vtime = read_vtime(txn).await?;
        let lock = store::for_update(txn, true);
        let mut teams = Vec::with_capacity(team_ids.len());
        let mut lanes = Vec::with_capacity(team_ids.len());
        for team in team_ids {
            let (settings, finish) = store::team_row(txn, team).await?.unwrap_or_default();
            let limit = settings
                .max_concurrent
                .unwrap_or(self.config.max_concurrent_per_team);
            let active = store::count_tasks(txn, Some(team), &ACTIVE).await?;
            let room = usize::try_from(limit.saturating_sub(active))
                .unwrap_or(usize::MAX)
                .min(max);
            if room == 0 {
                continue;
            }
            let rows = txn
                .query_all_raw(stmt(
                    txn,
                    format!(
                        "SELECT seq, priority FROM tasks WHERE team_id = $1 AND state = 'queued' \
                         AND not_before <= $2 ORDER BY priority DESC, seq LIMIT $3{lock}"
                    ),
                    [
                        team.to_string().into(),
                        now.into(),
                        i64::try_from(room).unwrap_or(i64::MAX).into(),
                    ],
                ))
                .await
                .map_err(db_err("selecting ready tasks"))?;
            let candidates = rows
                .iter()
                .map(|r| {
                    let priority: i32 = get(r, "priority")?;
                    let seq: i64 = get(r, "seq")?;
                    Ok(Candidate {
                        key: seq,
                        priority: u8::try_from(priority).unwrap_or(u8::MAX),
                        seq,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            teams.push(team);
            lanes.push(Lane::new(settings.weight, finish, room, candidates));
        }
        Ok((teams, FairQueue::new(vtime, lanes)))
    }

    /// Extends the lease of `task` at `epoch` by `lease_duration` from now (database
    /// time); the first heartbeat also moves the task from leased to running. Returns
    /// the new expiry.
    pub async fn heartbeat(
        &self,
        task: TaskId,
        epoch: u64,
        lease_duration: Duration,
    ) -> Result<chrono::DateTime<chrono::Utc>, Error> {
        let lease_duration = positive("lease_duration", lease_duration)?;
        let txn = self.begin().await?;
        let now = store::db_now(&txn).await?;
        let current = fenced(&txn, task, epoch, now).await?;
        let expires = now.saturating_add(store::micros(lease_duration));
        let mut change = Transition::new(&current, TaskState::Running, now);
        change.lease_expires_at = Some(expires);
        change.keep_owner = true;
        let updated = change.apply(&txn).await?.ok_or_else(|| raced(task))?;
        let events = if current.state == TaskState::Leased {
            vec![events::task_event(
                &updated,
                Some(TaskState::Leased),
                "",
                now,
            )?]
        } else {
            Vec::new()
        };
        self.commit(txn, &events).await?;
        Ok(store::time(expires))
    }

    /// Records the success of `task` at `epoch`. Repeating it for the same epoch after
    /// it succeeded is accepted and changes nothing.
    pub async fn complete(
        &self,
        task: TaskId,
        epoch: u64,
        result: serde_json::Value,
    ) -> Result<(), Error> {
        let mut out = self
            .complete_many(vec![Completion {
                task_id: task,
                epoch,
                result,
                owner: None,
            }])
            .await?;
        out.pop()
            .unwrap_or_else(|| Err(Error::internal("a completion produced no outcome")))
            .map(|_| ())
    }

    /// Records several completions in one transaction, with set-based reads and
    /// writes (one locking read of every task, one update per chunk), so a batch
    /// costs a few round trips whatever its size. Each completion gets its own
    /// outcome, the task as it is after (a stale one is rejected without affecting
    /// the others; a task named twice gets the same outcome twice); the outer error
    /// is a store failure, after which none was recorded.
    pub async fn complete_many(
        &self,
        completions: Vec<Completion>,
    ) -> Result<Vec<Result<Task, Error>>, Error> {
        let txn = self.begin().await?;
        let now = store::db_now(&txn).await?;
        let ids: Vec<TaskId> = completions.iter().map(|c| c.task_id).collect();
        let current = store::load_tasks_locked(&txn, &ids).await?;
        let mut outcomes: Vec<Option<Result<Task, Error>>> = vec![None; completions.len()];
        // First completion of each task to write: (index, task, result).
        let mut writes: Vec<(usize, &Task, String)> = Vec::new();
        let mut first_of: HashMap<TaskId, usize> = HashMap::new();
        let mut repeats: Vec<(usize, usize)> = Vec::new();
        for (i, c) in completions.iter().enumerate() {
            let outcome = match current.get(&c.task_id) {
                None => Err(Error::not_found(format!("task {}", c.task_id))),
                Some(t) if c.owner.is_some() && t.lease_owner != c.owner => {
                    Err(not_owner(t, c.owner))
                }
                Some(t) if t.state == TaskState::Succeeded && t.epoch == c.epoch => Ok(t.clone()),
                Some(t) => match check_lease(t, c.epoch, now) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        if let Some(first) = first_of.get(&c.task_id) {
                            repeats.push((i, *first));
                        } else {
                            first_of.insert(c.task_id, i);
                            writes.push((i, t, c.result.to_string()));
                        }
                        continue;
                    }
                },
            };
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = Some(outcome);
            }
        }
        let mut updated = HashMap::new();
        for chunk in writes.chunks(SET_CHUNK) {
            let rows: Vec<(i64, &str)> = chunk
                .iter()
                .map(|(_, t, result)| (t.seq, result.as_str()))
                .collect();
            for task in store::succeed_tasks(&txn, &rows, now).await? {
                updated.insert(task.seq, task);
            }
        }
        let mut events = Vec::with_capacity(writes.len());
        let mut finished = Vec::with_capacity(writes.len());
        for (i, before, _) in &writes {
            let outcome = match updated.remove(&before.seq) {
                Some(task) => {
                    events.push(events::task_event(&task, Some(before.state), "", now)?);
                    finished.push(task.clone());
                    Ok(task)
                }
                None => Err(raced(before.id)),
            };
            if let Some(slot) = outcomes.get_mut(*i) {
                *slot = Some(outcome);
            }
        }
        for (i, first) in repeats {
            let same = outcomes.get(first).cloned().flatten();
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = same;
            }
        }
        events.extend(plans::after_finish(&txn, &finished, now).await?);
        self.commit(txn, &events).await?;
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| Error::internal("a completion produced no outcome")))
            .collect()
    }

    /// Records a failed attempt of `task` at `epoch`. A retryable failure with
    /// attempts left is queued again after an exponential backoff with jitter; any
    /// other goes to the dead-letter queue. The error joins the task's history.
    pub async fn fail(
        &self,
        task: TaskId,
        epoch: u64,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, Error> {
        let failure = Failure {
            code: "",
            message: error,
            retryable,
            retry_after: None,
        };
        self.fail_with(task, epoch, failure).await
    }

    /// Like [`fail`](Self::fail), with the failure's code and a floor on the retry
    /// delay.
    pub async fn fail_with(
        &self,
        task: TaskId,
        epoch: u64,
        failure: Failure<'_>,
    ) -> Result<FailOutcome, Error> {
        let Failure {
            code,
            message: error,
            retryable,
            retry_after,
        } = failure;
        if code.len() > MAX_ERROR_CODE_LEN {
            return Err(Error::invalid_argument(
                "code",
                format!("code must be at most {MAX_ERROR_CODE_LEN} bytes"),
            ));
        }
        if error.trim().is_empty() {
            return Err(Error::invalid_argument(
                "error",
                "error must describe the failure",
            ));
        }
        let txn = self.begin().await?;
        let now = store::db_now(&txn).await?;
        let current = fenced(&txn, task, epoch, now).await?;
        store::record_error(&txn, &current, code, error, retryable, now).await?;
        let (updated, outcome) = if retryable && current.attempts < current.max_attempts {
            let (base_ms, max_ms) = current_backoff(&txn, &current).await?;
            let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
            let delay = task::backoff(current.attempts, ms(base_ms), ms(max_ms))
                .max(retry_after.unwrap_or_default());
            let not_before = now.saturating_add(store::micros(delay));
            let mut change = Transition::new(&current, TaskState::Queued, now);
            change.not_before = Some(not_before);
            change.last_error = Some(error);
            let updated = change.apply(&txn).await?.ok_or_else(|| raced(task))?;
            (
                updated,
                FailOutcome::Retrying {
                    not_before: store::time(not_before),
                },
            )
        } else {
            let mut change = Transition::new(&current, TaskState::DeadLettered, now);
            change.last_error = Some(error);
            let updated = change.apply(&txn).await?.ok_or_else(|| raced(task))?;
            (updated, FailOutcome::DeadLettered)
        };
        let mut events = vec![events::task_event(
            &updated,
            Some(current.state),
            error,
            now,
        )?];
        if outcome == FailOutcome::DeadLettered {
            events.extend(plans::after_finish(&txn, std::slice::from_ref(&updated), now).await?);
        }
        self.commit(txn, &events).await?;
        Ok(outcome)
    }

    /// Moves tasks whose lease expired (database time) back to the queue — or to the
    /// dead-letter queue when their attempts are used up — recording `lease expired`
    /// in their history. Handles at most `sweep_batch` tasks; returns how many.
    pub async fn requeue_expired(&self) -> Result<usize, Error> {
        let txn = self.begin().await?;
        let now = store::db_now(&txn).await?;
        let rows = txn
            .query_all_raw(stmt(
                &txn,
                format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ('leased', 'running') \
                     AND lease_expires_at <= $1 ORDER BY lease_expires_at LIMIT $2{}",
                    store::for_update(&txn, true)
                ),
                [
                    now.into(),
                    i64::try_from(self.config.sweep_batch)
                        .unwrap_or(i64::MAX)
                        .into(),
                ],
            ))
            .await
            .map_err(db_err("finding expired leases"))?;
        let expired = store::tasks_from_rows(&rows)?;
        let mut events = Vec::with_capacity(expired.len());
        let mut dead = Vec::new();
        const REASON: &str = "lease expired";
        for current in &expired {
            store::record_error(&txn, current, "lease_expired", REASON, true, now).await?;
            let to = if current.attempts >= current.max_attempts {
                TaskState::DeadLettered
            } else {
                TaskState::Queued
            };
            let mut change = Transition::new(current, to, now);
            change.not_before = Some(now);
            change.last_error = Some(REASON);
            if let Some(updated) = change.apply(&txn).await? {
                events.push(events::task_event(
                    &updated,
                    Some(current.state),
                    REASON,
                    now,
                )?);
                if updated.state == TaskState::DeadLettered {
                    dead.push(updated);
                }
            }
        }
        let n = events.len();
        events.extend(plans::after_finish(&txn, &dead, now).await?);
        self.commit(txn, &events).await?;
        if n > 0 {
            tracing::info!(requeued = n, "expired leases swept");
        }
        Ok(n)
    }
}

/// The task's stored backoff settings (milliseconds).
async fn current_backoff<C: ConnectionTrait>(conn: &C, task: &Task) -> Result<(i64, i64), Error> {
    let row = conn
        .query_one_raw(stmt(
            conn,
            "SELECT backoff_base_ms, backoff_max_ms FROM tasks WHERE seq = $1",
            [task.seq.into()],
        ))
        .await
        .map_err(db_err("reading backoff settings"))?
        .ok_or_else(|| Error::not_found(format!("task {}", task.id)))?;
    Ok((get(&row, "backoff_base_ms")?, get(&row, "backoff_max_ms")?))
}

/// The task, locked, after checking that `epoch` still holds a live lease on it.
async fn fenced(
    txn: &DatabaseTransaction,
    task: TaskId,
    epoch: u64,
    now: i64,
) -> Result<Task, Error> {
    let current = store::load_task(txn, task, None, true)
        .await?
        .ok_or_else(|| Error::not_found(format!("task {task}")))?;
    check_lease(&current, epoch, now)?;
    Ok(current)
}

/// Rejects a write at `epoch` unless it is the task's current epoch, the task is
/// leased or running, and the lease has not expired by `now`.
fn check_lease(task: &Task, epoch: u64, now: i64) -> Result<(), Error> {
    if task.epoch != epoch {
        return Err(Error::failed_precondition(format!(
            "epoch {epoch} of task {} is stale: the task is at epoch {} now",
            task.id, task.epoch
        )));
    }
    if !matches!(task.state, TaskState::Leased | TaskState::Running) {
        return Err(Error::failed_precondition(format!(
            "task {} is {}, not leased",
            task.id, task.state
        )));
    }
    let expired = task
        .lease_expires_at
        .is_none_or(|at| at.timestamp_micros() <= now);
    if expired {
        return Err(Error::failed_precondition(format!(
            "the lease of task {} at epoch {epoch} has expired",
            task.id
        )));
    }
    Ok(())
}

fn not_owner(task: &Task, owner: Option<OrchestratorId>) -> Error {
    let owner = owner.map(|o| o.to_string()).unwrap_or_default();
    Error::failed_precondition(format!(
        "task {} is not leased to orchestrator {owner}",
        task.id
    ))
}

fn raced(task: TaskId) -> Error {
    Error::aborted(format!("task {task} changed during the update; retry"))
}

/// Stores a team's finish tag, creating its settings row with defaults if needed.
async fn save_finish_tag<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
    finish: f64,
) -> Result<(), Error> {
    conn.execute_raw(stmt(
        conn,
        "INSERT INTO team_queues (team_id, weight, max_concurrent, max_queued, finish_tag) \
         VALUES ($1, 1, NULL, NULL, $2) ON CONFLICT (team_id) DO UPDATE SET \
         finish_tag = excluded.finish_tag",
        [team.to_string().into(), finish.into()],
    ))
    .await
    .map_err(db_err("saving a team's finish tag"))?;
    Ok(())
}
