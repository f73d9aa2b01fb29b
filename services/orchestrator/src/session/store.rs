//! The session tables in SQL: inserting a session behind its task's epoch fence,
//! checked state transitions, batched appends to the event log, and reads. Every
//! statement is plain SQL with `$n` parameters, which PostgreSQL and SQLite accept;
//! times are microseconds since the Unix epoch.

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_store::sea_orm::{
    ConnectionTrait, DbBackend, DbErr, QueryResult, SqlErr, Statement, Value,
};
use godel_types::{OrchestratorId, SessionId, TaskId, TeamId};
use serde::{Deserialize, Serialize};

use super::model::{
    Integration, LogBody, LoggedEvent, NewEvent, Repository, Session, SessionLimits, SessionResult,
    SessionState, Usage,
};
use crate::runtime::confine::ConfinementLevel;
use crate::runtime::reaper::AgentHandle;
use crate::runtime::worktree::{DiffSummary, FileStat};

/// The columns of `sessions`, in the order [`session_from_row`] reads them.
const SESSION_COLUMNS: &str = "id, team_id, task_id, epoch, profile_id, adapter, runtime, \
    repository_url, git_ref, branch, base_commit, orchestrator_id, state, confinement, \
    task_type, prompt, payload_json, max_duration_ms, max_cost_micro_usd, max_tokens, \
    created_at, started_at, finished_at, updated_at, error, exit_code, exit_signal, outcome, \
    commit_sha, diff_json, input_tokens, output_tokens, cost_micro_usd, last_event_offset, \
    integration_json";

/// Rows per `INSERT` into the event log (6 parameters each).
const EVENT_INSERT_CHUNK: usize = 500;

/// Logs a database failure and turns it into the error the caller sees.
pub(crate) fn db_err(operation: &'static str) -> impl FnOnce(DbErr) -> Error {
    move |source| {
        if let Some(SqlErr::UniqueConstraintViolation(_)) = source.sql_err() {
            return Error::aborted(format!(
                "{operation} raced with a concurrent change of the same session; retry"
            ));
        }
        tracing::error!(error = %source, operation, "session store query failed");
        Error::unavailable(format!("the session store failed while {operation}"))
    }
}

fn stmt<C: ConnectionTrait>(
    conn: &C,
    sql: impl Into<String>,
    values: impl IntoIterator<Item = Value>,
) -> Statement {
    Statement::from_sql_and_values(conn.get_database_backend(), sql, values)
}

fn for_update<C: ConnectionTrait>(conn: &C) -> &'static str {
    match conn.get_database_backend() {
        DbBackend::Postgres => " FOR UPDATE",
        _ => "",
    }
}

/// Microseconds since the epoch.
pub(crate) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub(crate) fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn get<T: godel_store::sea_orm::TryGetable>(row: &QueryResult, col: &str) -> Result<T, Error> {
    row.try_get::<T>("", col).map_err(|e| {
        tracing::error!(error = %e, column = col, "unreadable session store row");
        Error::internal(format!("unreadable column `{col}` in the session store"))
    })
}

fn corrupt(what: &str, value: &str) -> Error {
    tracing::error!(column = what, value, "corrupt session row");
    Error::internal(format!("corrupt `{what}` in the session store"))
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, Error> {
    s.parse().map_err(|_| corrupt(what, s))
}

fn unsigned(what: &str, n: i64) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_| corrupt(what, &n.to_string()))
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The stored form of a diff summary (`diff_json`).
#[derive(Serialize, Deserialize)]
struct StoredDiff {
    files_changed: usize,
    insertions: u64,
    deletions: u64,
    files: Vec<StoredFile>,
}

#[derive(Serialize, Deserialize)]
struct StoredFile {
    path: String,
    insertions: Option<u64>,
    deletions: Option<u64>,
}

fn diff_to_json(diff: &DiffSummary) -> String {
    let stored = StoredDiff {
        files_changed: diff.files_changed,
        insertions: diff.insertions,
        deletions: diff.deletions,
        files: diff
            .files
            .iter()
            .map(|f| StoredFile {
                path: f.path.clone(),
                insertions: f.insertions,
                deletions: f.deletions,
            })
            .collect(),
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

fn diff_from_json(text: &str) -> Result<DiffSummary, Error> {
    let stored: StoredDiff = serde_json::from_str(text).map_err(|_| corrupt("diff_json", text))?;
    Ok(DiffSummary {
        files_changed: stored.files_changed,
        insertions: stored.insertions,
        deletions: stored.deletions,
        files: stored
            .files
            .into_iter()
            .map(|f| FileStat {
                path: f.path,
                insertions: f.insertions,
                deletions: f.deletions,
            })
            .collect(),
    })
}

fn session_from_row(row: &QueryResult) -> Result<Session, Error> {
    let state: String = get(row, "state")?;
    let confinement: Option<String> = get(row, "confinement")?;
    let payload: String = get(row, "payload_json")?;
    let outcome: Option<String> = get(row, "outcome")?;
    let diff: Option<String> = get(row, "diff_json")?;
    let exit_code: Option<i64> = get(row, "exit_code")?;
    let integration: Option<String> = get(row, "integration_json")?;
    let integration = integration
        .map(|text| {
            serde_json::from_str::<Integration>(&text)
                .map_err(|_| corrupt("integration_json", &text))
        })
        .transpose()?;
    let result = match outcome {
        None => None,
        Some(outcome) => Some(SessionResult {
            exit_code: exit_code.and_then(|c| i32::try_from(c).ok()),
            exit_signal: get(row, "exit_signal")?,
            outcome,
            commit: get(row, "commit_sha")?,
            diff: diff.as_deref().map(diff_from_json).transpose()?,
            integration,
        }),
    };
    let max_duration_ms: Option<i64> = get(row, "max_duration_ms")?;
    Ok(Session {
        id: parse("id", &get::<String>(row, "id")?)?,
        team_id: parse("team_id", &get::<String>(row, "team_id")?)?,
        task_id: parse("task_id", &get::<String>(row, "task_id")?)?,
        epoch: unsigned("epoch", get(row, "epoch")?)?,
        profile_id: get::<Option<String>>(row, "profile_id")?
            .map(|p| parse("profile_id", &p))
            .transpose()?,
        adapter: get(row, "adapter")?,
        runtime: get(row, "runtime")?,
        repository: Repository {
            url: get(row, "repository_url")?,
            git_ref: get(row, "git_ref")?,
        },
        branch: get(row, "branch")?,
        base_commit: get(row, "base_commit")?,
        orchestrator_id: parse("orchestrator_id", &get::<String>(row, "orchestrator_id")?)?,
        state: SessionState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        confinement: confinement
            .map(|c| {
                serde_json::from_value::<ConfinementLevel>(serde_json::Value::String(c.clone()))
                    .map_err(|_| corrupt("confinement", &c))
            })
            .transpose()?,
        task_type: get(row, "task_type")?,
        prompt: get(row, "prompt")?,
        payload: serde_json::from_str(&payload).map_err(|_| corrupt("payload_json", &payload))?,
        limits: SessionLimits {
            max_duration: max_duration_ms
                .map(|ms| unsigned("max_duration_ms", ms).map(std::time::Duration::from_millis))
                .transpose()?,
            max_cost_micro_usd: unsigned("max_cost_micro_usd", get(row, "max_cost_micro_usd")?)?,
            max_tokens: unsigned("max_tokens", get(row, "max_tokens")?)?,
        },
        created_at: time(get(row, "created_at")?),
        started_at: get::<Option<i64>>(row, "started_at")?.map(time),
        finished_at: get::<Option<i64>>(row, "finished_at")?.map(time),
        updated_at: time(get(row, "updated_at")?),
        error: get(row, "error")?,
        result,
        usage: Usage {
            input_tokens: unsigned("input_tokens", get(row, "input_tokens")?)?,
            output_tokens: unsigned("output_tokens", get(row, "output_tokens")?)?,
            cost_micro_usd: unsigned("cost_micro_usd", get(row, "cost_micro_usd")?)?,
        },
        last_event_offset: unsigned("last_event_offset", get(row, "last_event_offset")?)?,
    })
}

/// What [`fence`] found for a task.
pub(crate) enum Fence {
    /// No session has this or a newer epoch: go ahead (the fence now holds `epoch`).
    Open,
    /// A session with this very epoch exists.
    Existing(Box<Session>),
}

/// Checks `epoch` against the newest epoch a session of `task` was started with and
/// raises the fence to it; refuses a stale epoch or another team's task.
pub(crate) async fn fence<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
    task: TaskId,
    epoch: u64,
) -> Result<Fence, Error> {
    let sql = format!(
        "SELECT team_id, epoch FROM session_task_fences WHERE task_id = $1{}",
        for_update(conn)
    );
    let row = conn
        .query_one_raw(stmt(conn, sql, [task.to_string().into()]))
        .await
        .map_err(db_err("reading the task's epoch fence"))?;
    let Some(row) = row else {
        conn.execute_raw(stmt(
            conn,
            "INSERT INTO session_task_fences (task_id, team_id, epoch) VALUES ($1, $2, $3)",
            [
                task.to_string().into(),
                team.to_string().into(),
                signed(epoch).into(),
            ],
        ))
        .await
        .map_err(db_err("raising the task's epoch fence"))?;
        return Ok(Fence::Open);
    };
    let owner: String = get(&row, "team_id")?;
    if owner != team.to_string() {
        return Err(Error::not_found(format!("task {task}")));
    }
    let current = unsigned("epoch", get(&row, "epoch")?)?;
    if epoch < current {
        return Err(Error::failed_precondition(format!(
            "epoch {epoch} of task {task} is stale: a session was started with epoch {current}"
        )));
    }
    if epoch == current {
        let sql =
            format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE task_id = $1 AND epoch = $2");
        let row = conn
            .query_one_raw(stmt(
                conn,
                sql,
                [task.to_string().into(), signed(epoch).into()],
            ))
            .await
            .map_err(db_err("reading a session"))?;
        if let Some(row) = row {
            return Ok(Fence::Existing(Box::new(session_from_row(&row)?)));
        }
        return Ok(Fence::Open);
    }
    conn.execute_raw(stmt(
        conn,
        "UPDATE session_task_fences SET epoch = $2 WHERE task_id = $1",
        [task.to_string().into(), signed(epoch).into()],
    ))
    .await
    .map_err(db_err("raising the task's epoch fence"))?;
    Ok(Fence::Open)
}

/// Inserts a new session (with `last_event_offset` 0).
pub(crate) async fn insert<C: ConnectionTrait>(conn: &C, s: &Session) -> Result<(), Error> {
    let sql = format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ({})",
        (1..=35)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let values: Vec<Value> = vec![
        s.id.to_string().into(),
        s.team_id.to_string().into(),
        s.task_id.to_string().into(),
        signed(s.epoch).into(),
        s.profile_id.map(|p| p.to_string()).into(),
        s.adapter.clone().into(),
        s.runtime.clone().into(),
        s.repository.url.clone().into(),
        s.repository.git_ref.clone().into(),
        s.branch.clone().into(),
        s.base_commit.clone().into(),
        s.orchestrator_id.to_string().into(),
        s.state.as_str().into(),
        s.confinement.map(|c| c.as_str().to_owned()).into(),
        s.task_type.clone().into(),
        s.prompt.clone().into(),
        s.payload.to_string().into(),
        s.limits
            .max_duration
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .into(),
        signed(s.limits.max_cost_micro_usd).into(),
        signed(s.limits.max_tokens).into(),
        micros(s.created_at).into(),
        s.started_at.map(micros).into(),
        s.finished_at.map(micros).into(),
        micros(s.updated_at).into(),
        s.error.clone().into(),
        Option::<i64>::None.into(),
        Option::<String>::None.into(),
        Option::<String>::None.into(),
        Option::<String>::None.into(),
        Option::<String>::None.into(),
        0i64.into(),
        0i64.into(),
        0i64.into(),
        0i64.into(),
        Option::<String>::None.into(),
    ];
    conn.execute_raw(stmt(conn, sql, values))
        .await
        .map_err(db_err("inserting a session"))?;
    Ok(())
}

/// The session `id`, restricted to `team` when given; locked for the rest of the
/// transaction on PostgreSQL when `lock`.
pub(crate) async fn load<C: ConnectionTrait>(
    conn: &C,
    id: SessionId,
    team: Option<TeamId>,
    lock: bool,
) -> Result<Option<Session>, Error> {
    let lock = if lock { for_update(conn) } else { "" };
    let (sql, values) = match team {
        Some(team) => (
            format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND team_id = $2{lock}"),
            vec![id.to_string().into(), team.to_string().into()],
        ),
        None => (
            format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1{lock}"),
            vec![id.to_string().into()],
        ),
    };
    let row = conn
        .query_one_raw(stmt(conn, sql, values))
        .await
        .map_err(db_err("reading a session"))?;
    row.as_ref().map(session_from_row).transpose()
}

/// A filter for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only these states; empty means any.
    pub states: Vec<SessionState>,
    pub task: Option<TaskId>,
    /// Sessions created before this one (the previous page's last).
    pub after: Option<SessionId>,
}

/// Up to `limit` sessions of `team`, newest first.
pub(crate) async fn list<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
    filter: &ListFilter,
    limit: usize,
) -> Result<Vec<Session>, Error> {
    let mut sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE team_id = $1");
    let mut values: Vec<Value> = vec![team.to_string().into()];
    if !filter.states.is_empty() {
        let first = values.len() + 1;
        let marks: Vec<String> = (first..first + filter.states.len())
            .map(|i| format!("${i}"))
            .collect();
        sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
        values.extend(filter.states.iter().map(|s| Value::from(s.as_str())));
    }
    if let Some(task) = filter.task {
        values.push(task.to_string().into());
        sql.push_str(&format!(" AND task_id = ${}", values.len()));
    }
    if let Some(after) = filter.after {
        values.push(after.to_string().into());
        sql.push_str(&format!(" AND id < ${}", values.len()));
    }
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", values.len()));
    let rows = conn
        .query_all_raw(stmt(conn, sql, values))
        .await
        .map_err(db_err("listing sessions"))?;
    rows.iter().map(session_from_row).collect()
}

/// Up to `limit` sessions of `orchestrator` (any team) not ended or ended at or
/// after `finished_since`, oldest first.
pub(crate) async fn of_orchestrator<C: ConnectionTrait>(
    conn: &C,
    orchestrator: OrchestratorId,
    finished_since: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Session>, Error> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE orchestrator_id = $1 \
         AND (finished_at IS NULL OR finished_at >= $2) ORDER BY id LIMIT $3"
    );
    let values: Vec<Value> = vec![
        orchestrator.to_string().into(),
        micros(finished_since).into(),
        i64::try_from(limit).unwrap_or(i64::MAX).into(),
    ];
    let rows = conn
        .query_all_raw(stmt(conn, sql, values))
        .await
        .map_err(db_err("listing the orchestrator's sessions"))?;
    rows.iter().map(session_from_row).collect()
}

/// Usage totals of `team`'s sessions (of `task`'s only, when given).
pub(crate) async fn usage_totals<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
    task: Option<TaskId>,
) -> Result<Usage, Error> {
    let mut sql = "SELECT CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
        CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
        CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) AS cost_micro_usd \
        FROM sessions WHERE team_id = $1"
        .to_owned();
    let mut values: Vec<Value> = vec![team.to_string().into()];
    if let Some(task) = task {
        sql.push_str(" AND task_id = $2");
        values.push(task.to_string().into());
    }
    let row = conn
        .query_one_raw(stmt(conn, sql, values))
        .await
        .map_err(db_err("summing session usage"))?
        .ok_or_else(|| Error::internal("no usage totals"))?;
    Ok(Usage {
        input_tokens: unsigned("input_tokens", get(&row, "input_tokens")?)?,
        output_tokens: unsigned("output_tokens", get(&row, "output_tokens")?)?,
        cost_micro_usd: unsigned("cost_micro_usd", get(&row, "cost_micro_usd")?)?,
    })
}

/// Fields a transition sets besides the state (each only when given).
#[derive(Debug, Clone, Default)]
pub(crate) struct Change {
    pub reason: String,
    pub error: Option<String>,
    pub branch: Option<(String, String)>,
    pub confinement: Option<ConfinementLevel>,
    pub result: Option<SessionResult>,
    /// The agent's process group, recorded when it started (found again after a
    /// crash of the orchestrator).
    pub agent: Option<AgentHandle>,
}

/// Moves the (locked) `session` to `to` at `now`, refusing an illegal transition, and
/// appends the `state_change` event followed by `extra`. Returns the session as it
/// is after the change and the appended events.
pub(crate) async fn transition<C: ConnectionTrait>(
    conn: &C,
    session: &Session,
    to: SessionState,
    change: Change,
    extra: Vec<NewEvent>,
    now: DateTime<Utc>,
) -> Result<(Session, Vec<LoggedEvent>), Error> {
    let from = session.state;
    if !from.can_move_to(to) {
        return Err(Error::failed_precondition(format!(
            "session {} cannot go from {} to {}",
            session.id,
            from.as_str(),
            to.as_str()
        )));
    }
    let mut next = session.clone();
    next.state = to;
    next.updated_at = now;
    if to == SessionState::Running && next.started_at.is_none() {
        next.started_at = Some(now);
    }
    if to.is_terminal() {
        next.finished_at = Some(now);
    }
    if change.error.is_some() {
        next.error = change.error.clone();
    }
    if let Some((branch, base)) = &change.branch {
        next.branch = Some(branch.clone());
        next.base_commit = Some(base.clone());
    }
    if change.confinement.is_some() {
        next.confinement = change.confinement;
    }
    if change.result.is_some() {
        next.result = change.result.clone();
    }
    let result = next.result.as_ref();
    let updated = conn
        .execute_raw(stmt(
            conn,
            "UPDATE sessions SET state = $2, updated_at = $3, started_at = $4, finished_at = $5, \
             error = $6, branch = $7, base_commit = $8, confinement = $9, exit_code = $10, \
             exit_signal = $11, outcome = $12, commit_sha = $13, diff_json = $14, \
             integration_json = $16 WHERE id = $1 AND state = $15",
            [
                next.id.to_string().into(),
                to.as_str().into(),
                micros(now).into(),
                next.started_at.map(micros).into(),
                next.finished_at.map(micros).into(),
                next.error.clone().into(),
                next.branch.clone().into(),
                next.base_commit.clone().into(),
                next.confinement.map(|c| c.as_str().to_owned()).into(),
                result.and_then(|r| r.exit_code).map(i64::from).into(),
                result.and_then(|r| r.exit_signal.clone()).into(),
                result.map(|r| r.outcome.clone()).into(),
                result.and_then(|r| r.commit.clone()).into(),
                result
                    .and_then(|r| r.diff.as_ref())
                    .map(diff_to_json)
                    .into(),
                from.as_str().into(),
                result
                    .and_then(|r| r.integration.as_ref())
                    .map(|i| serde_json::to_string(i).unwrap_or_default())
                    .into(),
            ],
        ))
        .await
        .map_err(db_err("changing a session's state"))?;
    if updated.rows_affected() != 1 {
        return Err(Error::aborted(format!(
            "session {} changed state concurrently; retry",
            next.id
        )));
    }
    if let Some(agent) = &change.agent {
        record_agent(conn, next.id, agent).await?;
    }
    let mut events = vec![NewEvent::own(LogBody::StateChange {
        from: Some(from),
        to,
        reason: change.reason,
    })];
    events.extend(extra);
    let logged = append(conn, &mut next, events, now).await?;
    Ok((next, logged))
}

/// Appends `events` to the log of `session` in one statement per chunk, adding their
/// usage to its totals; updates `session` (offset and usage) to match the row.
pub(crate) async fn append<C: ConnectionTrait>(
    conn: &C,
    session: &mut Session,
    events: Vec<NewEvent>,
    now: DateTime<Utc>,
) -> Result<Vec<LoggedEvent>, Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut delta = Usage::default();
    for event in &events {
        if let LogBody::Usage {
            input_tokens,
            output_tokens,
            cost_micro_usd,
        } = event.body
        {
            delta.input_tokens += input_tokens;
            delta.output_tokens += output_tokens;
            delta.cost_micro_usd += cost_micro_usd;
        }
    }
    let n = events.len() as u64;
    // The row update is the per-session lock that orders concurrent appends.
    let row = conn
        .query_one_raw(stmt(
            conn,
            "UPDATE sessions SET last_event_offset = last_event_offset + $2, \
             input_tokens = input_tokens + $3, output_tokens = output_tokens + $4, \
             cost_micro_usd = cost_micro_usd + $5, updated_at = $6 WHERE id = $1 \
             RETURNING last_event_offset, input_tokens, output_tokens, cost_micro_usd",
            [
                session.id.to_string().into(),
                signed(n).into(),
                signed(delta.input_tokens).into(),
                signed(delta.output_tokens).into(),
                signed(delta.cost_micro_usd).into(),
                micros(now).into(),
            ],
        ))
        .await
        .map_err(db_err("appending session events"))?
        .ok_or_else(|| Error::not_found(format!("session {}", session.id)))?;
    let last = unsigned("last_event_offset", get(&row, "last_event_offset")?)?;
    session.last_event_offset = last;
    session.usage = Usage {
        input_tokens: unsigned("input_tokens", get(&row, "input_tokens")?)?,
        output_tokens: unsigned("output_tokens", get(&row, "output_tokens")?)?,
        cost_micro_usd: unsigned("cost_micro_usd", get(&row, "cost_micro_usd")?)?,
    };
    session.updated_at = now;
    let first = last + 1 - n;
    let logged: Vec<LoggedEvent> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| LoggedEvent {
            session_id: session.id,
            offset: first + i as u64,
            occurred_at: now,
            body: event.body,
            raw: event.raw,
        })
        .collect();
    for chunk in logged.chunks(EVENT_INSERT_CHUNK) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 6);
        let mut rows = Vec::with_capacity(chunk.len());
        for (i, event) in chunk.iter().enumerate() {
            let p = i * 6;
            rows.push(format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6
            ));
            let payload = serde_json::to_string(&event.body).map_err(|e| {
                tracing::error!(error = %e, "cannot encode a session event");
                Error::internal("cannot encode a session event")
            })?;
            values.extend([
                Value::from(event.session_id.to_string()),
                signed(event.offset).into(),
                event.body.kind().into(),
                payload.into(),
                event.raw.clone().into(),
                micros(event.occurred_at).into(),
            ]);
        }
        let sql = format!(
            "INSERT INTO session_events (session_id, seq, kind, payload_json, raw, occurred_at) \
             VALUES {}",
            rows.join(", ")
        );
        conn.execute_raw(stmt(conn, sql, values))
            .await
            .map_err(db_err("appending session events"))?;
    }
    Ok(logged)
}

/// Up to `limit` events of `session` from offset `from` on, in order.
pub(crate) async fn events<C: ConnectionTrait>(
    conn: &C,
    session: SessionId,
    from: u64,
    limit: usize,
) -> Result<Vec<LoggedEvent>, Error> {
    let rows = conn
        .query_all_raw(stmt(
            conn,
            "SELECT seq, payload_json, raw, occurred_at FROM session_events \
             WHERE session_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
            [
                session.to_string().into(),
                signed(from).into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await
        .map_err(db_err("reading session events"))?;
    rows.iter()
        .map(|row| {
            let payload: String = get(row, "payload_json")?;
            Ok(LoggedEvent {
                session_id: session,
                offset: unsigned("seq", get(row, "seq")?)?,
                occurred_at: time(get(row, "occurred_at")?),
                body: serde_json::from_str(&payload)
                    .map_err(|_| corrupt("payload_json", &payload))?,
                raw: get(row, "raw")?,
            })
        })
        .collect()
}

/// Records the agent process of session `id`.
async fn record_agent<C: ConnectionTrait>(
    conn: &C,
    id: SessionId,
    agent: &AgentHandle,
) -> Result<(), Error> {
    conn.execute_raw(stmt(
        conn,
        "UPDATE sessions SET agent_pgid = $2, agent_start_ticks = $3, agent_boot_id = $4 \
         WHERE id = $1",
        [
            id.to_string().into(),
            i64::from(agent.pgid).into(),
            signed(agent.start_ticks).into(),
            agent.boot_id.clone().into(),
        ],
    ))
    .await
    .map_err(db_err("recording a session's agent"))?;
    Ok(())
}

/// The agent process recorded for session `id`, if one started.
pub(crate) async fn agent_of<C: ConnectionTrait>(
    conn: &C,
    id: SessionId,
) -> Result<Option<AgentHandle>, Error> {
    let row = conn
        .query_one_raw(stmt(
            conn,
            "SELECT agent_pgid, agent_start_ticks, agent_boot_id FROM sessions WHERE id = $1",
            [id.to_string().into()],
        ))
        .await
        .map_err(db_err("reading a session's agent"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let pgid: Option<i64> = get(&row, "agent_pgid")?;
    let ticks: Option<i64> = get(&row, "agent_start_ticks")?;
    let boot_id: Option<String> = get(&row, "agent_boot_id")?;
    let (Some(pgid), Some(ticks), Some(boot_id)) = (pgid, ticks, boot_id) else {
        return Ok(None);
    };
    Ok(Some(AgentHandle {
        pgid: i32::try_from(pgid).map_err(|_| corrupt("agent_pgid", &pgid.to_string()))?,
        start_ticks: unsigned("agent_start_ticks", ticks)?,
        boot_id,
    }))
}
