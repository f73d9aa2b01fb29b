//! The `provider_keys` table in plain SQL (`$n` parameters, which PostgreSQL and
//! SQLite accept). Ciphertexts and wrapped data keys are stored base64-encoded;
//! times are microseconds since the Unix epoch.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_store::sea_orm::{ConnectionTrait, DbErr, QueryResult, SqlErr, Statement, Value};
use godel_types::{SecretId, TeamId};

use super::ProviderKey;

const COLUMNS: &str = "id, team_id, provider, name, hint, version, ciphertext, wrapped_key, \
    kek_id, created_at, rotated_at";

/// A stored key: its metadata and its sealed secret.
pub(crate) struct Row {
    pub key: ProviderKey,
    pub sealed: Sealed,
}

/// A secret sealed under a fresh data key, and that data key wrapped by the KEK.
#[derive(Clone)]
pub(crate) struct Sealed {
    pub ciphertext: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub kek_id: String,
}

pub(crate) fn db_err(operation: &'static str) -> impl FnOnce(DbErr) -> Error {
    move |source| {
        if let Some(SqlErr::UniqueConstraintViolation(_)) = source.sql_err() {
            return Error::already_exists(
                "a provider key with this provider and name (rotate it instead)",
            );
        }
        tracing::error!(error = %source, operation, "provider key store query failed");
        Error::unavailable(format!("the provider key store failed while {operation}"))
    }
}

fn stmt<C: ConnectionTrait>(conn: &C, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(conn.get_database_backend(), sql, values)
}

fn corrupt(column: &str) -> Error {
    tracing::error!(column, "corrupt provider key row");
    Error::internal(format!("corrupt `{column}` in the provider key store"))
}

fn get<T: godel_store::sea_orm::TryGetable>(row: &QueryResult, col: &str) -> Result<T, Error> {
    row.try_get::<T>("", col).map_err(|_| corrupt(col))
}

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn from_row(row: &QueryResult) -> Result<Row, Error> {
    let bytes = |col: &str| -> Result<Vec<u8>, Error> {
        B64.decode(get::<String>(row, col)?)
            .map_err(|_| corrupt(col))
    };
    Ok(Row {
        key: ProviderKey {
            id: get::<String>(row, "id")?
                .parse()
                .map_err(|_| corrupt("id"))?,
            team_id: get::<String>(row, "team_id")?
                .parse()
                .map_err(|_| corrupt("team_id"))?,
            provider: get(row, "provider")?,
            name: get(row, "name")?,
            hint: get(row, "hint")?,
            version: u32::try_from(get::<i64>(row, "version")?).map_err(|_| corrupt("version"))?,
            kek_id: get(row, "kek_id")?,
            created_at: time(get(row, "created_at")?),
            rotated_at: get::<Option<i64>>(row, "rotated_at")?.map(time),
        },
        sealed: Sealed {
            ciphertext: bytes("ciphertext")?,
            wrapped_key: bytes("wrapped_key")?,
            kek_id: get(row, "kek_id")?,
        },
    })
}

pub(crate) async fn insert<C: ConnectionTrait>(
    conn: &C,
    key: &ProviderKey,
    sealed: &Sealed,
) -> Result<(), Error> {
    let sql = format!(
        "INSERT INTO provider_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    let values: Vec<Value> = vec![
        key.id.to_string().into(),
        key.team_id.to_string().into(),
        key.provider.clone().into(),
        key.name.clone().into(),
        key.hint.clone().into(),
        i64::from(key.version).into(),
        B64.encode(&sealed.ciphertext).into(),
        B64.encode(&sealed.wrapped_key).into(),
        sealed.kek_id.clone().into(),
        key.created_at.timestamp_micros().into(),
        key.rotated_at.map(|t| t.timestamp_micros()).into(),
    ];
    conn.execute_raw(stmt(conn, &sql, values))
        .await
        .map_err(db_err("storing a provider key"))?;
    Ok(())
}

/// Replaces the sealed secret of `key` (as it is after the rotation) if the row
/// still holds version `key.version - 1`; false when it changed meanwhile.
pub(crate) async fn rotate<C: ConnectionTrait>(
    conn: &C,
    key: &ProviderKey,
    sealed: &Sealed,
) -> Result<bool, Error> {
    let result = conn
        .execute_raw(stmt(
            conn,
            "UPDATE provider_keys SET version = $3, hint = $4, ciphertext = $5, \
             wrapped_key = $6, kek_id = $7, rotated_at = $8 \
             WHERE id = $1 AND team_id = $2 AND version = $9",
            vec![
                key.id.to_string().into(),
                key.team_id.to_string().into(),
                i64::from(key.version).into(),
                key.hint.clone().into(),
                B64.encode(&sealed.ciphertext).into(),
                B64.encode(&sealed.wrapped_key).into(),
                sealed.kek_id.clone().into(),
                key.rotated_at.map(|t| t.timestamp_micros()).into(),
                i64::from(key.version.saturating_sub(1)).into(),
            ],
        ))
        .await
        .map_err(db_err("rotating a provider key"))?;
    Ok(result.rows_affected() == 1)
}

pub(crate) async fn by_id<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
    id: SecretId,
) -> Result<Option<Row>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM provider_keys WHERE id = $1 AND team_id = $2");
    conn.query_one_raw(stmt(
        conn,
        &sql,
        vec![id.to_string().into(), team.to_string().into()],
    ))
    .await
    .map_err(db_err("reading a provider key"))?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub(crate) async fn by_name<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
    provider: &str,
    name: &str,
) -> Result<Option<Row>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM provider_keys WHERE team_id = $1 AND provider = $2 AND name = $3"
    );
    conn.query_one_raw(stmt(
        conn,
        &sql,
        vec![team.to_string().into(), provider.into(), name.into()],
    ))
    .await
    .map_err(db_err("reading a provider key"))?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub(crate) async fn list<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
) -> Result<Vec<ProviderKey>, Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM provider_keys WHERE team_id = $1 ORDER BY provider, name");
    let rows = conn
        .query_all_raw(stmt(conn, &sql, vec![team.to_string().into()]))
        .await
        .map_err(db_err("listing provider keys"))?;
    rows.iter()
        .map(|r| from_row(r).map(|row| row.key))
        .collect()
}
