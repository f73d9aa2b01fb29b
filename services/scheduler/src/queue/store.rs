//! SQL shared by the queue operations: the database clock, reading task rows, and the
//! small reads and writes several operations make. Every statement is plain SQL with
//! `$n` parameters, which both PostgreSQL and SQLite accept.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_store::sea_orm::{
    ConnectionTrait, DbBackend, DbErr, QueryResult, SqlErr, Statement, Value,
};
use godel_types::{OrchestratorId, PlanId, ProfileId, TaskId, TeamId};

use super::task::{Task, TaskError, TaskState, TeamSettings};

/// The columns of `tasks`, in the order [`task_from_row`] reads them.
pub(crate) const TASK_COLUMNS: &str = "seq, id, team_id, plan_id, task_type, priority, \
    payload_json, idempotency_key, state, epoch, lease_owner, lease_expires_at, attempts, \
    max_attempts, backoff_base_ms, backoff_max_ms, not_before, created_at, updated_at, \
    last_error, result_json, plan_key, labels, profile_id";

/// Logs a database failure and turns it into the error the caller sees.
pub(crate) fn db_err(operation: &'static str) -> impl FnOnce(DbErr) -> Error {
    move |source| {
        if let Some(SqlErr::UniqueConstraintViolation(_)) = source.sql_err() {
            return Error::aborted(format!(
                "{operation} raced with a concurrent change of the same task; retry"
            ));
        }
        tracing::error!(error = %source, operation, "task store query failed");
        Error::unavailable(format!("the task store failed while {operation}"))
    }
}

/// A statement with `$n` parameters for `conn`'s database.
pub(crate) fn stmt<C: ConnectionTrait>(
    conn: &C,
    sql: impl Into<String>,
    values: impl IntoIterator<Item = Value>,
) -> Statement {
    Statement::from_sql_and_values(conn.get_database_backend(), sql, values)
}

/// `" FOR UPDATE"` on PostgreSQL (row locks), nothing on SQLite (whose transactions
/// already serialize writers).
pub(crate) fn for_update<C: ConnectionTrait>(conn: &C, skip_locked: bool) -> &'static str {
    match (conn.get_database_backend(), skip_locked) {
        (DbBackend::Postgres, true) => " FOR UPDATE SKIP LOCKED",
        (DbBackend::Postgres, false) => " FOR UPDATE",
        _ => "",
    }
}

/// `$first, $first+1, …` for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The database's current time in microseconds since the Unix epoch. Leases, backoff
/// and expiry are all measured by this clock, never the caller's.
pub(crate) async fn db_now<C: ConnectionTrait>(conn: &C) -> Result<i64, Error> {
    let sql = match conn.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT) AS now"
        }
        _ => "SELECT CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) AS now",
    };
    let row = conn
        .query_one_raw(stmt(conn, sql, []))
        .await
        .map_err(db_err("reading the database clock"))?
        .ok_or_else(|| Error::internal("the database clock query returned no row"))?;
    get(&row, "now")
}

/// Microseconds since the epoch as a time.
pub(crate) fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(crate) fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Reads column `col` of `row`.
pub(crate) fn get<T: godel_store::sea_orm::TryGetable>(
    row: &QueryResult,
    col: &str,
) -> Result<T, Error> {
    row.try_get::<T>("", col).map_err(|e| {
        tracing::error!(error = %e, column = col, "unreadable task store row");
        Error::internal(format!("unreadable column `{col}` in the task store"))
    })
}

pub(crate) fn corrupt(what: &str, value: &str) -> Error {
    tracing::error!(column = what, value, "corrupt task row");
    Error::internal(format!("corrupt `{what}` in the task store"))
}

pub(crate) fn parse_id<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, Error> {
    s.parse().map_err(|_| corrupt(what, s))
}

fn parse_json(what: &str, s: &str) -> Result<serde_json::Value, Error> {
    serde_json::from_str(s).map_err(|_| corrupt(what, s))
}

/// A `tasks` row selected with [`TASK_COLUMNS`].
pub(crate) fn task_from_row(row: &QueryResult) -> Result<Task, Error> {
    let state: String = get(row, "state")?;
    let plan_id: Option<String> = get(row, "plan_id")?;
    let lease_owner: Option<String> = get(row, "lease_owner")?;
    let result: Option<String> = get(row, "result_json")?;
    let priority: i32 = get(row, "priority")?;
    let epoch: i64 = get(row, "epoch")?;
    let attempts: i32 = get(row, "attempts")?;
    let max_attempts: i32 = get(row, "max_attempts")?;
    let labels: String = get(row, "labels")?;
    let profile_id: Option<String> = get(row, "profile_id")?;
    Ok(Task {
        seq: get(row, "seq")?,
        id: parse_id("id", &get::<String>(row, "id")?)?,
        team_id: parse_id("team_id", &get::<String>(row, "team_id")?)?,
        plan_id: plan_id
            .map(|p| parse_id::<PlanId>("plan_id", &p))
            .transpose()?,
        task_type: get(row, "task_type")?,
        priority: u8::try_from(priority).map_err(|_| corrupt("priority", &priority.to_string()))?,
        payload: parse_json("payload_json", &get::<String>(row, "payload_json")?)?,
        idempotency_key: get(row, "idempotency_key")?,
        state: TaskState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        epoch: u64::try_from(epoch).map_err(|_| corrupt("epoch", &epoch.to_string()))?,
        lease_owner: lease_owner
            .map(|o| parse_id::<OrchestratorId>("lease_owner", &o))
            .transpose()?,
        lease_expires_at: get::<Option<i64>>(row, "lease_expires_at")?.map(time),
        attempts: u32::try_from(attempts)
            .map_err(|_| corrupt("attempts", &attempts.to_string()))?,
        max_attempts: u32::try_from(max_attempts)
            .map_err(|_| corrupt("max_attempts", &max_attempts.to_string()))?,
        not_before: time(get(row, "not_before")?),
        created_at: time(get(row, "created_at")?),
        updated_at: time(get(row, "updated_at")?),
        last_error: get(row, "last_error")?,
        result: result.map(|r| parse_json("result_json", &r)).transpose()?,
        plan_key: get(row, "plan_key")?,
        labels: serde_json::from_str(&labels).map_err(|_| corrupt("labels", &labels))?,
        profile_id: profile_id
            .map(|p| parse_id::<ProfileId>("profile_id", &p))
            .transpose()?,
    })
}

pub(crate) fn tasks_from_rows(rows: &[QueryResult]) -> Result<Vec<Task>, Error> {
    rows.iter().map(task_from_row).collect()
}

/// The task `id`, locked for the rest of the transaction on PostgreSQL; restricted to
/// `team` when given.
pub(crate) async fn load_task<C: ConnectionTrait>(
    conn: &C,
    id: TaskId,
    team: Option<TeamId>,
    lock: bool,
) -> Result<Option<Task>, Error> {
    let lock = if lock { for_update(conn, false) } else { "" };
    let (sql, values) = match team {
        Some(team) => (
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND team_id = $2{lock}"),
            vec![id.to_string().into(), team.to_string().into()],
        ),
        None => (
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1{lock}"),
            vec![id.to_string().into()],
        ),
    };
    let row = conn
        .query_one_raw(stmt(conn, sql, values))
        .await
        .map_err(db_err("reading a task"))?;
    row.as_ref().map(task_from_row).transpose()
}

/// The tasks with `ids` (any team) by id, locked on PostgreSQL in `seq` order so
/// concurrent batches lock in the same order.
pub(crate) async fn load_tasks_locked<C: ConnectionTrait>(
    conn: &C,
    ids: &[TaskId],
) -> Result<HashMap<TaskId, Task>, Error> {
    let mut out = HashMap::with_capacity(ids.len());
    let lock = for_update(conn, false);
    for chunk in ids.chunks(500) {
        let rows = conn
            .query_all_raw(stmt(
                conn,
                format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({}) ORDER BY seq{lock}",
                    placeholders(1, chunk.len())
                ),
                chunk.iter().map(|id| id.to_string().into()),
            ))
            .await
            .map_err(db_err("reading tasks"))?;
        for task in tasks_from_rows(&rows)? {
            out.insert(task.id, task);
        }
    }
    Ok(out)
}

/// Marks the leased or running tasks `rows` (`seq`, result JSON) succeeded at `now`
/// in one statement, keeping their lease owner; returns the tasks as updated (a task
/// no longer leased or running is left alone and missing from the answer).
pub(crate) async fn succeed_tasks<C: ConnectionTrait>(
    conn: &C,
    rows: &[(i64, &str)],
    now: i64,
) -> Result<Vec<Task>, Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut values: Vec<Value> = vec![now.into()];
    let mut cases = String::new();
    for (seq, result) in rows {
        let n = values.len();
        cases.push_str(&format!(" WHEN ${} THEN ${}", n + 1, n + 2));
        values.push((*seq).into());
        values.push((*result).into());
    }
    let first = values.len() + 1;
    values.extend(rows.iter().map(|(seq, _)| Value::from(*seq)));
    let updated = conn
        .query_all_raw(stmt(
            conn,
            format!(
                "UPDATE tasks SET state = 'succeeded', lease_expires_at = NULL, updated_at = $1, \
                 result_json = CASE seq{cases} END \
                 WHERE seq IN ({}) AND state IN ('leased', 'running') RETURNING {TASK_COLUMNS}",
                placeholders(first, rows.len())
            ),
            values,
        ))
        .await
        .map_err(db_err("completing tasks"))?;
    tasks_from_rows(&updated)
}

/// Counts tasks of `team` (all teams when `None`) in `states`.
pub(crate) async fn count_tasks<C: ConnectionTrait>(
    conn: &C,
    team: Option<TeamId>,
    states: &[TaskState],
) -> Result<u64, Error> {
    let list = states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let (sql, values): (String, Vec<Value>) = match team {
        Some(team) => (
            format!("SELECT COUNT(*) AS n FROM tasks WHERE team_id = $1 AND state IN ({list})"),
            vec![team.to_string().into()],
        ),
        None => (
            format!("SELECT COUNT(*) AS n FROM tasks WHERE state IN ({list})"),
            vec![],
        ),
    };
    let row = conn
        .query_one_raw(stmt(conn, sql, values))
        .await
        .map_err(db_err("counting tasks"))?
        .ok_or_else(|| Error::internal("COUNT returned no row"))?;
    Ok(u64::try_from(get::<i64>(&row, "n")?).unwrap_or(0))
}

/// A team's stored settings and WFQ finish tag, if it has a row.
pub(crate) async fn team_row<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
) -> Result<Option<(TeamSettings, f64)>, Error> {
    let row = conn
        .query_one_raw(stmt(
            conn,
            "SELECT weight, max_concurrent, max_queued, finish_tag FROM team_queues \
             WHERE team_id = $1",
            [team.to_string().into()],
        ))
        .await
        .map_err(db_err("reading team queue settings"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let weight: i32 = get(&row, "weight")?;
    let limit = |v: Option<i64>| v.map(|n| u64::try_from(n).unwrap_or(0));
    Ok(Some((
        TeamSettings {
            weight: u32::try_from(weight).unwrap_or(1).max(1),
            max_concurrent: limit(get(&row, "max_concurrent")?),
            max_queued: limit(get(&row, "max_queued")?),
        },
        get(&row, "finish_tag")?,
    )))
}

/// Records a failed attempt of `task` in its error history.
pub(crate) async fn record_error<C: ConnectionTrait>(
    conn: &C,
    task: &Task,
    code: &str,
    message: &str,
    retryable: bool,
    now: i64,
) -> Result<(), Error> {
    conn.execute_raw(stmt(
        conn,
        "INSERT INTO task_errors (task_id, team_id, attempt, epoch, message, retryable, \
         occurred_at, code, orchestrator_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            task.id.to_string().into(),
            task.team_id.to_string().into(),
            i64::from(task.attempts).into(),
            i64::try_from(task.epoch).unwrap_or(i64::MAX).into(),
            message.to_owned().into(),
            i32::from(retryable).into(),
            now.into(),
            code.to_owned().into(),
            task.lease_owner.map(|o| o.to_string()).into(),
        ],
    ))
    .await
    .map_err(db_err("recording a task error"))?;
    Ok(())
}

/// The error history of `task`, oldest first.
pub(crate) async fn errors_of<C: ConnectionTrait>(
    conn: &C,
    task: TaskId,
) -> Result<Vec<TaskError>, Error> {
    Ok(errors_of_many(conn, &[task])
        .await?
        .remove(&task)
        .unwrap_or_default())
}

/// The error histories of `tasks`, each oldest first, in one query.
pub(crate) async fn errors_of_many<C: ConnectionTrait>(
    conn: &C,
    tasks: &[TaskId],
) -> Result<HashMap<TaskId, Vec<TaskError>>, Error> {
    let mut histories: HashMap<TaskId, Vec<TaskError>> = HashMap::new();
    if tasks.is_empty() {
        return Ok(histories);
    }
    let rows = conn
        .query_all_raw(stmt(
            conn,
            format!(
                "SELECT task_id, attempt, epoch, message, retryable, occurred_at, code, \
                 orchestrator_id FROM task_errors WHERE task_id IN ({}) ORDER BY seq",
                placeholders(1, tasks.len())
            ),
            tasks.iter().map(|t| t.to_string().into()),
        ))
        .await
        .map_err(db_err("reading task errors"))?;
    for row in &rows {
        let task = parse_id::<TaskId>("task_id", &get::<String>(row, "task_id")?)?;
        let error = TaskError {
            attempt: u32::try_from(get::<i32>(row, "attempt")?).unwrap_or(0),
            epoch: u64::try_from(get::<i64>(row, "epoch")?).unwrap_or(0),
            message: get(row, "message")?,
            retryable: get::<i32>(row, "retryable")? != 0,
            occurred_at: time(get(row, "occurred_at")?),
            code: get(row, "code")?,
            orchestrator_id: get::<Option<String>>(row, "orchestrator_id")?
                .map(|o| parse_id::<OrchestratorId>("orchestrator_id", &o))
                .transpose()?,
        };
        histories.entry(task).or_default().push(error);
    }
    Ok(histories)
}

/// Sets a task's state and lease fields, guarded by its current epoch and state so a
/// concurrent change makes it a no-op. Returns the updated task, or `None` when the
/// guard did not match.
pub(crate) struct Transition<'a> {
    pub task: &'a Task,
    pub to: TaskState,
    pub now: i64,
    pub lease_expires_at: Option<i64>,
    pub keep_owner: bool,
    pub not_before: Option<i64>,
    pub last_error: Option<&'a str>,
    pub result_json: Option<String>,
    pub reset_attempts: bool,
}

impl<'a> Transition<'a> {
    pub(crate) fn new(task: &'a Task, to: TaskState, now: i64) -> Self {
        Self {
            task,
            to,
            now,
            lease_expires_at: None,
            keep_owner: false,
            not_before: None,
            last_error: None,
            result_json: None,
            reset_attempts: false,
        }
    }

    pub(crate) async fn apply<C: ConnectionTrait>(self, conn: &C) -> Result<Option<Task>, Error> {
        let t = self.task;
        let owner = if self.keep_owner {
            t.lease_owner.map(|o| o.to_string())
        } else {
            None
        };
        let not_before = self
            .not_before
            .unwrap_or_else(|| t.not_before.timestamp_micros());
        let last_error = self
            .last_error
            .map(str::to_owned)
            .or_else(|| t.last_error.clone());
        let result_json = self
            .result_json
            .or_else(|| t.result.as_ref().map(|r| r.to_string()));
        let attempts = if self.reset_attempts { 0 } else { t.attempts };
        let row = conn
            .query_one_raw(stmt(
                conn,
                format!(
                    "UPDATE tasks SET state = $1, lease_owner = $2, lease_expires_at = $3, \
                     not_before = $4, last_error = $5, result_json = $6, attempts = $7, \
                     updated_at = $8 WHERE seq = $9 AND epoch = $10 AND state = $11 \
                     RETURNING {TASK_COLUMNS}"
                ),
                [
                    self.to.as_str().into(),
                    owner.into(),
                    self.lease_expires_at.into(),
                    not_before.into(),
                    last_error.into(),
                    result_json.into(),
                    i64::from(attempts).into(),
                    self.now.into(),
                    t.seq.into(),
                    i64::try_from(t.epoch).unwrap_or(i64::MAX).into(),
                    t.state.as_str().into(),
                ],
            ))
            .await
            .map_err(db_err("updating a task"))?;
        row.as_ref().map(task_from_row).transpose()
    }
}
