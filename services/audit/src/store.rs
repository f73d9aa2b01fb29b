//! SQL over the two audit tables: appending a batch under the chain lock, reading the
//! chain in pages, and filtered queries.

use std::fmt::Write as _;

use godel_store::sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, QueryResult, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait, Value,
};
use godel_store::{Backend, Db};

use chrono::{DateTime, Utc};
use godel_types::TeamId;

use crate::canonical::{ChainEntry, GENESIS, Hash, Payload, parse_hash, record_hash};
use crate::error::AuditError;
use crate::record::Outcome;

/// First half of the PostgreSQL advisory-lock key appenders serialize on; the second
/// half is a hash of the current schema.
const APPEND_LOCK_CLASS: i32 = 0x6761_7564; // "gaud"
/// Rows per multi-row INSERT (and ids per lookup): a whole batch of
/// [`crate::log::MAX_BATCH`] in one statement per table, so an append takes a few
/// round trips however large it is. 12 parameters a row stay well under the limits of
/// PostgreSQL (65 535) and SQLite (32 766).
const INSERT_CHUNK: usize = 1000;

/// A record ready to be chained: redacted, with its payload digest.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub record_id: String,
    pub occurred_at_ns: i64,
    pub team_id: String,
    pub payload: Payload,
}

/// What one append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// Records newly stored.
    pub appended: u32,
    /// Records skipped because their id was already stored (or repeated in the batch).
    pub duplicates: u32,
    /// The sequence of the last record in the chain after this append (0: empty).
    pub head: u64,
}

/// A chain entry with its payload, `None` when the payload was erased.
pub(crate) type Row = (ChainEntry, Option<Payload>);

/// Which records a query returns. `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub team_id: Option<TeamId>,
    /// The actor's subject id.
    pub actor_id: Option<String>,
    /// Exact action, or a prefix when it ends in `.`.
    pub action: Option<String>,
    pub resource: Option<String>,
    pub outcome: Option<Outcome>,
    /// Occurred at or after.
    pub since: Option<DateTime<Utc>>,
    /// Occurred before.
    pub until: Option<DateTime<Utc>>,
    pub trace_id: Option<String>,
}

/// Newest first (queries) or oldest first (export).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    NewestFirst,
    OldestFirst,
}

/// A statement with placeholders numbered for the backend.
pub(crate) struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(crate) fn new(backend: DbBackend, text: &str) -> Self {
        Self {
            backend,
            text: text.to_owned(),
            values: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub(crate) fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => {
                let _ = write!(self.text, "${}", self.values.len());
            }
            _ => self.text.push('?'),
        }
        self
    }

    pub(crate) fn build(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

pub(crate) fn db_err(operation: &'static str) -> impl FnOnce(DbErr) -> AuditError {
    move |source| AuditError::Db { operation, source }
}

pub(crate) const COLUMNS: &str = "c.sequence, c.record_id, c.occurred_at, c.team_id, c.payload_digest, \
    c.prev_hash, c.hash, p.sequence AS p_sequence, p.actor_kind, p.actor_id, p.actor_team_id, \
    p.actor_roles, p.action, p.resource, p.outcome, p.trace_id, p.client_ip, p.details, p.redacted, \
    p.erased AS p_erased";
pub(crate) const FROM: &str =
    " FROM audit_chain c LEFT JOIN audit_payload p ON p.sequence = c.sequence";

/// Appends `batch` in one transaction: records whose id is already stored (or that
/// repeat an id earlier in the batch) are skipped, the rest get the next sequences.
///
/// Appenders are serialized so sequences have no gaps: on PostgreSQL by a
/// transaction-scoped advisory lock keyed by the schema, on SQLite by `BEGIN
/// IMMEDIATE` (the database's write lock).
pub(crate) async fn append(db: &Db, batch: Vec<Prepared>) -> Result<AppendOutcome, AuditError> {
    let txn = begin_append(db).await?;
    let outcome = append_in(&txn, batch).await?;
    txn.commit().await.map_err(db_err("committing an append"))?;
    Ok(outcome)
}

/// [`append`] inside a transaction begun with [`begin_append`] (so other changes can
/// commit together with the records that describe them).
pub(crate) async fn append_in(
    txn: &DatabaseTransaction,
    batch: Vec<Prepared>,
) -> Result<AppendOutcome, AuditError> {
    let backend = txn.get_database_backend();

    let mut existing = std::collections::HashSet::new();
    for chunk in batch.chunks(INSERT_CHUNK) {
        let mut sql = Sql::new(
            backend,
            "SELECT record_id FROM audit_chain WHERE record_id IN (",
        );
        for (i, p) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(p.record_id.clone());
        }
        sql.push(")");
        for row in txn
            .query_all_raw(sql.build())
            .await
            .map_err(db_err("finding stored record ids"))?
        {
            let id: String = row
                .try_get("", "record_id")
                .map_err(db_err("reading stored record ids"))?;
            existing.insert(id);
        }
    }

    let (mut sequence, mut prev) = head_in(txn).await?;
    let mut duplicates = 0u32;
    let mut rows: Vec<(ChainEntry, Payload)> = Vec::with_capacity(batch.len());
    for p in batch {
        if !existing.insert(p.record_id.clone()) {
            duplicates += 1;
            continue;
        }
        sequence += 1;
        let digest = p.payload.digest();
        let hash = record_hash(
            &prev,
            sequence,
            &p.record_id,
            p.occurred_at_ns,
            &p.team_id,
            &digest,
        );
        rows.push((
            ChainEntry {
                sequence,
                record_id: p.record_id,
                occurred_at_ns: p.occurred_at_ns,
                team_id: p.team_id,
                payload_digest: digest,
                prev_hash: prev,
                hash,
            },
            p.payload,
        ));
        prev = hash;
    }

    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut chain = Sql::new(
            backend,
            "INSERT INTO audit_chain (sequence, record_id, occurred_at, team_id, payload_digest, prev_hash, hash) VALUES ",
        );
        let mut payload = Sql::new(
            backend,
            "INSERT INTO audit_payload (sequence, actor_kind, actor_id, actor_team_id, actor_roles, action, resource, outcome, trace_id, client_ip, details, redacted) VALUES ",
        );
        for (i, (e, p)) in chunk.iter().enumerate() {
            if i > 0 {
                chain.push(", ");
                payload.push(", ");
            }
            let seq = i64::try_from(e.sequence).map_err(|_| AuditError::ChainFull)?;
            chain
                .push("(")
                .bind(seq)
                .push(", ")
                .bind(e.record_id.clone());
            chain
                .push(", ")
                .bind(e.occurred_at_ns)
                .push(", ")
                .bind(e.team_id.clone());
            chain.push(", ").bind(hex::encode(e.payload_digest));
            chain.push(", ").bind(hex::encode(e.prev_hash));
            chain.push(", ").bind(hex::encode(e.hash)).push(")");
            let roles = serde_json::to_string(&p.actor_roles).map_err(|e| AuditError::Invalid {
                field: "actor.roles".to_owned(),
                reason: e.to_string(),
            })?;
            payload.push("(").bind(seq).push(", ").bind(p.actor_kind);
            payload
                .push(", ")
                .bind(p.actor_id.clone())
                .push(", ")
                .bind(p.actor_team_id.clone());
            payload
                .push(", ")
                .bind(roles)
                .push(", ")
                .bind(p.action.clone());
            payload
                .push(", ")
                .bind(p.resource.clone())
                .push(", ")
                .bind(p.outcome);
            payload
                .push(", ")
                .bind(p.trace_id.clone())
                .push(", ")
                .bind(p.client_ip.clone());
            payload
                .push(", ")
                .bind(p.details.clone())
                .push(", ")
                .bind(p.redacted)
                .push(")");
        }
        txn.execute_raw(chain.build())
            .await
            .map_err(db_err("inserting chain entries"))?;
        txn.execute_raw(payload.build())
            .await
            .map_err(db_err("inserting payloads"))?;
    }
    Ok(AppendOutcome {
        appended: u32::try_from(rows.len()).unwrap_or(u32::MAX),
        duplicates,
        head: sequence,
    })
}

/// Begins a transaction holding the chain lock (see [`append`]).
pub(crate) async fn begin_append(db: &Db) -> Result<DatabaseTransaction, AuditError> {
    match db.backend() {
        Backend::Postgres => {
            let txn = db
                .conn()
                .begin()
                .await
                .map_err(db_err("beginning an append"))?;
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
                [APPEND_LOCK_CLASS.into()],
            ))
            .await
            .map_err(db_err("taking the append lock"))?;
            Ok(txn)
        }
        Backend::Sqlite => db
            .conn()
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(db_err("beginning an append")),
    }
}

async fn head_in<C: ConnectionTrait>(conn: &C) -> Result<(u64, Hash), AuditError> {
    let stmt = Statement::from_string(
        conn.get_database_backend(),
        "SELECT sequence, hash FROM audit_chain ORDER BY sequence DESC LIMIT 1",
    );
    let Some(row) = conn
        .query_one_raw(stmt)
        .await
        .map_err(db_err("reading the chain head"))?
    else {
        return Ok((0, GENESIS));
    };
    let seq: i64 = row
        .try_get("", "sequence")
        .map_err(db_err("reading the chain head"))?;
    let hash: String = row
        .try_get("", "hash")
        .map_err(db_err("reading the chain head"))?;
    let sequence = u64::try_from(seq).unwrap_or(0);
    let hash = parse_hash(&hash).ok_or(AuditError::Corrupt {
        sequence,
        reason: "the stored hash is not 64 hex digits".to_owned(),
    })?;
    Ok((sequence, hash))
}

/// The last sequence and its hash ((0, zeros) for an empty chain).
pub(crate) async fn head(db: &Db) -> Result<(u64, Hash), AuditError> {
    head_in(db.conn()).await
}

/// Up to `limit` entries with sequence > `after` (and ≤ `to` when set), in order.
pub(crate) async fn chain_page(
    db: &Db,
    after: u64,
    to: Option<u64>,
    limit: u64,
) -> Result<Vec<QueryResult>, AuditError> {
    let mut sql = Sql::new(db.conn().get_database_backend(), "SELECT ");
    // The bound on `p` too: PostgreSQL does not carry it to the outer join's inner
    // side, and a merge join would read every payload before the page.
    sql.push(COLUMNS)
        .push(FROM)
        .push(" AND p.sequence > ")
        .bind(to_i64(after));
    sql.push(" WHERE c.sequence > ").bind(to_i64(after));
    if let Some(to) = to {
        sql.push(" AND c.sequence <= ").bind(to_i64(to));
    }
    sql.push(" ORDER BY c.sequence LIMIT ").bind(to_i64(limit));
    db.conn()
        .query_all_raw(sql.build())
        .await
        .map_err(db_err("reading the chain"))
}

/// The sequence of the entry whose hash is `hash`, if any.
pub(crate) async fn sequence_of_hash(db: &Db, hash: &Hash) -> Result<Option<u64>, AuditError> {
    let mut sql = Sql::new(
        db.conn().get_database_backend(),
        "SELECT sequence FROM audit_chain WHERE hash = ",
    );
    sql.bind(hex::encode(hash))
        .push(" ORDER BY sequence LIMIT 1");
    let row = db
        .conn()
        .query_one_raw(sql.build())
        .await
        .map_err(db_err("finding an entry by hash"))?;
    row.map(|r| r.try_get::<i64>("", "sequence"))
        .transpose()
        .map(|s| s.and_then(|s| u64::try_from(s).ok()))
        .map_err(db_err("finding an entry by hash"))
}

/// Up to `limit` records matching `filter`, after the `cursor` sequence in `order`.
pub(crate) async fn query(
    db: &Db,
    filter: &Filter,
    cursor: Option<u64>,
    order: Order,
    limit: u64,
) -> Result<Vec<QueryResult>, AuditError> {
    let mut sql = Sql::new(db.conn().get_database_backend(), "SELECT ");
    sql.push(COLUMNS).push(FROM);
    // The cursor bounds `p` too (see `chain_page`).
    match (order, cursor) {
        (Order::NewestFirst, Some(c)) => {
            sql.push(" AND p.sequence < ").bind(to_i64(c));
        }
        (Order::OldestFirst, Some(c)) => {
            sql.push(" AND p.sequence > ").bind(to_i64(c));
        }
        (_, None) => {}
    }
    sql.push(" WHERE 1 = 1");
    if let Some(team) = &filter.team_id {
        sql.push(" AND c.team_id = ").bind(team.to_string());
    }
    if let Some(actor) = &filter.actor_id {
        sql.push(" AND p.actor_id = ").bind(actor.clone());
    }
    if let Some(action) = &filter.action {
        if action.ends_with('.') {
            let len = i32::try_from(action.chars().count()).unwrap_or(i32::MAX);
            sql.push(" AND substr(p.action, 1, ")
                .bind(len)
                .push(") = ")
                .bind(action.clone());
        } else {
            sql.push(" AND p.action = ").bind(action.clone());
        }
    }
    if let Some(resource) = &filter.resource {
        sql.push(" AND p.resource = ").bind(resource.clone());
    }
    if let Some(outcome) = filter.outcome {
        sql.push(" AND p.outcome = ").bind(outcome.number());
    }
    if let Some(since) = filter.since {
        sql.push(" AND c.occurred_at >= ")
            .bind(nanos_saturating(since));
    }
    if let Some(until) = filter.until {
        sql.push(" AND c.occurred_at < ")
            .bind(nanos_saturating(until));
    }
    if let Some(trace) = &filter.trace_id {
        sql.push(" AND p.trace_id = ").bind(trace.clone());
    }
    match (order, cursor) {
        (Order::NewestFirst, Some(c)) => {
            sql.push(" AND c.sequence < ").bind(to_i64(c));
        }
        (Order::OldestFirst, Some(c)) => {
            sql.push(" AND c.sequence > ").bind(to_i64(c));
        }
        (_, None) => {}
    }
    sql.push(match order {
        Order::NewestFirst => " ORDER BY c.sequence DESC LIMIT ",
        Order::OldestFirst => " ORDER BY c.sequence ASC LIMIT ",
    });
    sql.bind(to_i64(limit));
    db.conn()
        .query_all_raw(sql.build())
        .await
        .map_err(db_err("querying records"))
}

/// Nanoseconds since the Unix epoch, clamped to what an `i64` holds (for filters).
fn nanos_saturating(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Decodes a row of [`chain_page`] or [`query`]; an error names what is corrupt.
pub(crate) fn decode(row: &QueryResult) -> Result<Row, AuditError> {
    let get_seq: i64 = row
        .try_get("", "sequence")
        .map_err(db_err("reading a chain entry"))?;
    let sequence = u64::try_from(get_seq).unwrap_or(0);
    let corrupt = |reason: String| AuditError::Corrupt { sequence, reason };
    let text = |col: &str| -> Result<String, AuditError> {
        row.try_get::<String>("", col)
            .map_err(|e| corrupt(format!("column {col}: {e}")))
    };
    let hash = |col: &str| -> Result<Hash, AuditError> {
        parse_hash(&text(col)?).ok_or_else(|| corrupt(format!("{col} is not 64 hex digits")))
    };
    let entry = ChainEntry {
        sequence,
        record_id: text("record_id")?,
        occurred_at_ns: row
            .try_get("", "occurred_at")
            .map_err(|e| corrupt(format!("column occurred_at: {e}")))?,
        team_id: text("team_id")?,
        payload_digest: hash("payload_digest")?,
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
    };
    let present: Option<i64> = row
        .try_get("", "p_sequence")
        .map_err(|e| corrupt(format!("column p_sequence: {e}")))?;
    if present.is_none() {
        return Ok((entry, None));
    }
    let int = |col: &str| -> Result<i32, AuditError> {
        row.try_get::<i32>("", col)
            .map_err(|e| corrupt(format!("column {col}: {e}")))
    };
    let roles: Vec<String> = serde_json::from_str(&text("actor_roles")?)
        .map_err(|e| corrupt(format!("actor_roles is not a JSON array of strings: {e}")))?;
    let payload = Payload {
        actor_kind: int("actor_kind")?,
        actor_id: text("actor_id")?,
        actor_team_id: text("actor_team_id")?,
        actor_roles: roles,
        action: text("action")?,
        resource: text("resource")?,
        outcome: int("outcome")?,
        trace_id: text("trace_id")?,
        client_ip: text("client_ip")?,
        details: text("details")?,
        redacted: row
            .try_get("", "redacted")
            .map_err(|e| corrupt(format!("column redacted: {e}")))?,
    };
    Ok((entry, Some(payload)))
}
