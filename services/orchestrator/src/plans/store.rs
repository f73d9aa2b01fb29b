//! The `plan_integrations` table in plain SQL (`$n` parameters; times in
//! microseconds since the Unix epoch).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_store::sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};
use godel_types::{PlanId, TaskId, TeamId};

const COLUMNS: &str = "plan_id, team_id, repository_url, repo_path, branch, base_commit, \
    head_commit, state, merged_task_ids, reason, created_at, updated_at, rolled_back_at";

/// Whether a plan's integration branch still takes merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrationState {
    Open,
    RolledBack,
}

impl IntegrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "rolled_back" => Some(Self::RolledBack),
            _ => None,
        }
    }
}

/// A plan's integration branch as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanIntegration {
    pub plan_id: PlanId,
    pub team_id: TeamId,
    /// The repository as the plan's tasks named it.
    pub repository_url: String,
    /// The repository on this machine the branch lives in (a local repository or
    /// the cached clone).
    pub repo_path: PathBuf,
    /// `godel/plan-<plan-id>`.
    pub branch: String,
    pub base_commit: String,
    /// Where the branch pointed after the last merge or rollback recorded.
    pub head_commit: String,
    pub state: IntegrationState,
    /// The tasks merged onto the branch, in merge order.
    pub merged_task_ids: Vec<TaskId>,
    /// Why it was rolled back.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub rolled_back_at: Option<DateTime<Utc>>,
}

pub(crate) fn db_err(operation: &'static str) -> impl FnOnce(DbErr) -> Error {
    move |source| {
        tracing::error!(error = %source, operation, "plan integration store query failed");
        Error::unavailable(format!(
            "the plan integration store failed while {operation}"
        ))
    }
}

fn stmt<C: ConnectionTrait>(
    conn: &C,
    sql: impl Into<String>,
    values: impl IntoIterator<Item = Value>,
) -> Statement {
    Statement::from_sql_and_values(conn.get_database_backend(), sql, values)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn corrupt(column: &str, value: &str) -> Error {
    tracing::error!(column, value, "unreadable plan integration row");
    Error::internal(format!(
        "plan_integrations.{column} holds an unreadable value"
    ))
}

fn get<T: godel_store::sea_orm::TryGetable>(row: &QueryResult, column: &str) -> Result<T, Error> {
    row.try_get("", column).map_err(|e| {
        tracing::error!(error = %e, column, "cannot read a plan integration column");
        Error::internal(format!("cannot read plan_integrations.{column}"))
    })
}

fn from_row(row: &QueryResult) -> Result<PlanIntegration, Error> {
    let parse = |column: &str| -> Result<String, Error> { get::<String>(row, column) };
    let plan_id = parse("plan_id")?;
    let team_id = parse("team_id")?;
    let state = parse("state")?;
    let merged = parse("merged_task_ids")?;
    let merged: Vec<String> =
        serde_json::from_str(&merged).map_err(|_| corrupt("merged_task_ids", &merged))?;
    Ok(PlanIntegration {
        plan_id: plan_id.parse().map_err(|_| corrupt("plan_id", &plan_id))?,
        team_id: team_id.parse().map_err(|_| corrupt("team_id", &team_id))?,
        repository_url: parse("repository_url")?,
        repo_path: PathBuf::from(parse("repo_path")?),
        branch: parse("branch")?,
        base_commit: parse("base_commit")?,
        head_commit: parse("head_commit")?,
        state: IntegrationState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        merged_task_ids: merged
            .iter()
            .map(|t| t.parse().map_err(|_| corrupt("merged_task_ids", t)))
            .collect::<Result<_, _>>()?,
        reason: get(row, "reason")?,
        created_at: time(get(row, "created_at")?),
        updated_at: time(get(row, "updated_at")?),
        rolled_back_at: get::<Option<i64>>(row, "rolled_back_at")?.map(time),
    })
}

fn merged_json(record: &PlanIntegration) -> String {
    let ids: Vec<String> = record
        .merged_task_ids
        .iter()
        .map(ToString::to_string)
        .collect();
    serde_json::Value::from(ids).to_string()
}

/// Records `record` unless the plan already has one (another session raced).
pub(crate) async fn insert_if_missing<C: ConnectionTrait>(
    conn: &C,
    record: &PlanIntegration,
) -> Result<(), Error> {
    conn.execute_raw(stmt(
        conn,
        format!(
            "INSERT INTO plan_integrations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             $9, $10, $11, $12, $13) ON CONFLICT (plan_id) DO NOTHING"
        ),
        [
            record.plan_id.to_string().into(),
            record.team_id.to_string().into(),
            record.repository_url.clone().into(),
            record.repo_path.to_string_lossy().into_owned().into(),
            record.branch.clone().into(),
            record.base_commit.clone().into(),
            record.head_commit.clone().into(),
            record.state.as_str().into(),
            merged_json(record).into(),
            record.reason.clone().into(),
            micros(record.created_at).into(),
            micros(record.updated_at).into(),
            record.rolled_back_at.map(micros).into(),
        ],
    ))
    .await
    .map_err(db_err("recording a plan integration"))?;
    Ok(())
}

/// The integration of `plan`, of any team.
pub(crate) async fn load<C: ConnectionTrait>(
    conn: &C,
    plan: PlanId,
) -> Result<Option<PlanIntegration>, Error> {
    read(conn, plan, "").await
}

/// Like [`load`], locking the row for the transaction on PostgreSQL.
pub(crate) async fn load_locked<C: ConnectionTrait>(
    conn: &C,
    plan: PlanId,
) -> Result<Option<PlanIntegration>, Error> {
    let lock = match conn.get_database_backend() {
        DbBackend::Postgres => " FOR UPDATE",
        _ => "",
    };
    read(conn, plan, lock).await
}

async fn read<C: ConnectionTrait>(
    conn: &C,
    plan: PlanId,
    lock: &str,
) -> Result<Option<PlanIntegration>, Error> {
    let row = conn
        .query_one_raw(stmt(
            conn,
            format!("SELECT {COLUMNS} FROM plan_integrations WHERE plan_id = $1{lock}"),
            [plan.to_string().into()],
        ))
        .await
        .map_err(db_err("reading a plan integration"))?;
    row.as_ref().map(from_row).transpose()
}

/// Writes the mutable fields of `record`.
pub(crate) async fn update<C: ConnectionTrait>(
    conn: &C,
    record: &PlanIntegration,
) -> Result<(), Error> {
    conn.execute_raw(stmt(
        conn,
        "UPDATE plan_integrations SET head_commit = $2, state = $3, merged_task_ids = $4, \
         reason = $5, updated_at = $6, rolled_back_at = $7 WHERE plan_id = $1",
        [
            record.plan_id.to_string().into(),
            record.head_commit.clone().into(),
            record.state.as_str().into(),
            merged_json(record).into(),
            record.reason.clone().into(),
            micros(record.updated_at).into(),
            record.rolled_back_at.map(micros).into(),
        ],
    ))
    .await
    .map_err(db_err("updating a plan integration"))?;
    Ok(())
}
