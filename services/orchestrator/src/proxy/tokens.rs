//! Session tokens: the only credential an agent holds. 256 random bits written as
//! `gdst_<64 hex>`, stored only as their SHA-256, bound to the session's team,
//! session, task and budget; they expire at the session's wall-clock limit and are
//! revoked when the session reaches a terminal state (in the same transaction).

use chrono::{DateTime, Utc};
use godel_config::Secret;
use godel_error::Error;
use godel_store::sea_orm::{ConnectionTrait, Statement, Value};
use godel_types::{SessionId, TaskId, TeamId};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::session::Session;

/// What every session token starts with (so scanners and people recognise one).
pub const PREFIX: &str = "gdst_";

/// What a valid token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub session_id: SessionId,
    pub team_id: TeamId,
    pub task_id: TaskId,
    /// 0 means no bound.
    pub max_cost_micro_usd: u64,
    /// 0 means no bound.
    pub max_tokens: u64,
    pub expires_at: DateTime<Utc>,
}

/// Why a presented token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token this orchestrator minted.
    Unknown,
    /// Past the session's wall-clock limit.
    Expired,
    /// The session ended.
    Revoked,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Self::Unknown => "invalid session token",
            Self::Expired => "the session token expired with its session's time limit",
            Self::Revoked => "the session token was revoked: its session ended",
        }
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn db_err(operation: &'static str) -> impl FnOnce(godel_store::sea_orm::DbErr) -> Error {
    move |source| {
        tracing::error!(error = %source, operation, "session token store query failed");
        Error::unavailable(format!("the session token store failed while {operation}"))
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Mints a token for `session`, valid until `expires_at` or the session's end.
pub(crate) async fn mint<C: ConnectionTrait>(
    conn: &C,
    session: &Session,
    expires_at: DateTime<Utc>,
) -> Result<Secret<String>, Error> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", hex::encode(bytes));
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "INSERT INTO session_tokens (token_hash, session_id, team_id, task_id, \
         max_cost_micro_usd, max_tokens, created_at, expires_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)",
        [
            Value::from(hash(&token)),
            session.id.to_string().into(),
            session.team_id.to_string().into(),
            session.task_id.to_string().into(),
            signed(session.limits.max_cost_micro_usd).into(),
            signed(session.limits.max_tokens).into(),
            Utc::now().timestamp_micros().into(),
            expires_at.timestamp_micros().into(),
        ],
    ))
    .await
    .map_err(db_err("minting a session token"))?;
    Ok(Secret::new(token))
}

/// What `token` is bound to at `now`, or why it is refused.
pub async fn check<C: ConnectionTrait>(
    conn: &C,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Result<Binding, Refusal>, Error> {
    if !token.starts_with(PREFIX) {
        return Ok(Err(Refusal::Unknown));
    }
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT session_id, team_id, task_id, max_cost_micro_usd, max_tokens, expires_at, \
             revoked_at FROM session_tokens WHERE token_hash = $1",
            [Value::from(hash(token))],
        ))
        .await
        .map_err(db_err("checking a session token"))?;
    let Some(row) = row else {
        return Ok(Err(Refusal::Unknown));
    };
    let corrupt = |column: &str| {
        tracing::error!(column, "corrupt session token row");
        Error::internal(format!("corrupt `{column}` in the session token store"))
    };
    let text = |column: &str| {
        row.try_get::<String>("", column)
            .map_err(|_| corrupt(column))
    };
    let int = |column: &str| row.try_get::<i64>("", column).map_err(|_| corrupt(column));
    let revoked: Option<i64> = row
        .try_get("", "revoked_at")
        .map_err(|_| corrupt("revoked_at"))?;
    if revoked.is_some() {
        return Ok(Err(Refusal::Revoked));
    }
    let expires_at =
        DateTime::from_timestamp_micros(int("expires_at")?).ok_or_else(|| corrupt("expires_at"))?;
    if now >= expires_at {
        return Ok(Err(Refusal::Expired));
    }
    Ok(Ok(Binding {
        session_id: text("session_id")?
            .parse()
            .map_err(|_| corrupt("session_id"))?,
        team_id: text("team_id")?.parse().map_err(|_| corrupt("team_id"))?,
        task_id: text("task_id")?.parse().map_err(|_| corrupt("task_id"))?,
        max_cost_micro_usd: u64::try_from(int("max_cost_micro_usd")?).unwrap_or(0),
        max_tokens: u64::try_from(int("max_tokens")?).unwrap_or(0),
        expires_at,
    }))
}

/// Revokes every token of `session` (called in the transaction that ends it).
pub(crate) async fn revoke<C: ConnectionTrait>(
    conn: &C,
    session: SessionId,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "UPDATE session_tokens SET revoked_at = $2 WHERE session_id = $1 AND revoked_at IS NULL",
        [
            Value::from(session.to_string()),
            now.timestamp_micros().into(),
        ],
    ))
    .await
    .map_err(db_err("revoking session tokens"))?;
    Ok(())
}
