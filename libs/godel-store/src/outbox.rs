//! The transactional outbox: events are written in the same transaction as the state
//! change they announce, and the [`OutboxRelay`] publishes them afterwards.
//!
//! ```ignore
//! db.transaction(|txn| Box::pin(async move {
//!     task.insert(txn).await?;                 // the state change
//!     outbox::enqueue(txn, &events).await?;    // the events announcing it
//!     Ok::<_, StoreError>(())
//! })).await?;
//! notifier.notify();                           // wake the relay now
//! ```
//!
//! Ordering: the relay publishes rows in `seq` order, and `seq` is assigned at insert.
//! Two transactions touching the same entity are serialized by the row lock of the
//! business write, so write the business row first and enqueue after it: the second
//! transaction then gets the later `seq`.

mod entity;
mod relay;

pub use relay::{BatchOutcome, OutboxRelay, RelayConfig, RelayNotifier};

use bytes::Bytes;
use godel_bus::{Headers, OutgoingMessage, Subject};
use godel_types::EventId;
use sea_orm::{ActiveValue, ConnectionTrait, EntityTrait, PaginatorTrait};

use crate::error::StoreError;

const TABLE: &str = "outbox";
/// Rows per `INSERT` statement (5 bind parameters each keeps far below the limits).
const INSERT_CHUNK: usize = 500;

/// An event to publish once the transaction that wrote it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The event id: the bus message id (`Nats-Msg-Id`) consumers deduplicate by.
    pub id: EventId,
    pub subject: Subject,
    pub headers: Headers,
    pub payload: Bytes,
}

impl OutboxEvent {
    /// An event with a fresh id.
    pub fn new(subject: Subject, headers: Headers, payload: impl Into<Bytes>) -> Self {
        Self {
            id: EventId::new(),
            subject,
            headers,
            payload: payload.into(),
        }
    }
}

/// Writes `events` to the outbox, in order, with batched inserts. Call it with the
/// transaction that writes the state change, so both commit or roll back together.
pub async fn enqueue<C: ConnectionTrait>(
    conn: &C,
    events: &[OutboxEvent],
) -> Result<(), StoreError> {
    let now = chrono::Utc::now();
    for chunk in events.chunks(INSERT_CHUNK) {
        let rows = chunk.iter().map(|e| entity::ActiveModel {
            seq: ActiveValue::NotSet,
            event_id: ActiveValue::Set(e.id.as_uuid()),
            subject: ActiveValue::Set(e.subject.as_str().to_owned()),
            headers: ActiveValue::Set(headers_to_json(&e.headers)),
            payload: ActiveValue::Set(e.payload.to_vec()),
            created_at: ActiveValue::Set(now),
        });
        entity::Entity::insert_many(rows)
            .exec_without_returning(conn)
            .await
            .map_err(StoreError::query("inserting events", TABLE))?;
    }
    Ok(())
}

/// How many events wait in the outbox.
pub async fn pending<C: ConnectionTrait>(conn: &C) -> Result<u64, StoreError> {
    entity::Entity::find()
        .count(conn)
        .await
        .map_err(StoreError::query("counting events", TABLE))
}

/// About how many events wait in the outbox: the span of `seq` between its oldest
/// and newest rows (exact unless rows in between were published out of turn or
/// rolled back), read from the ends of the primary key instead of counting.
pub async fn pending_estimate<C: ConnectionTrait>(conn: &C) -> Result<u64, StoreError> {
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT COALESCE(MAX(seq) - MIN(seq) + 1, 0) AS n FROM outbox",
        ))
        .await
        .map_err(StoreError::query("estimating waiting events", TABLE))?;
    let n = match row {
        Some(row) => row
            .try_get::<i64>("", "n")
            .map_err(StoreError::query("estimating waiting events", TABLE))?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

fn headers_to_json(headers: &Headers) -> serde_json::Value {
    serde_json::Value::Object(
        headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

/// Turns a stored row back into the message to publish.
fn to_message(row: entity::Model) -> Result<(EventId, OutgoingMessage), StoreError> {
    let corrupt = |reason: String| StoreError::CorruptRow {
        table: TABLE,
        key: format!("seq={}", row.seq),
        reason,
    };
    let subject = Subject::parse(&row.subject).map_err(|e| corrupt(e.to_string()))?;
    let serde_json::Value::Object(map) = &row.headers else {
        return Err(corrupt("headers are not a JSON object".to_owned()));
    };
    let mut headers = Headers::new();
    for (k, v) in map {
        let serde_json::Value::String(v) = v else {
            return Err(corrupt(format!("header `{k}` is not a string")));
        };
        headers.insert(k.clone(), v.clone());
    }
    let id = EventId::from_uuid(row.event_id);
    let msg = OutgoingMessage {
        id: id.to_string(),
        subject,
        headers,
        payload: Bytes::from(row.payload),
    };
    Ok((id, msg))
}
