//! The outbox relay: publishes outbox rows in order and deletes them after the acks.
//!
//! Delivery is exactly-once per event id at the consumer, given the bus deduplicates by
//! message id: a row is deleted only after its publish was acknowledged, so a relay
//! that dies between the publish and the delete republishes the row on restart with
//! the same id, and the bus drops the copy (within its dedup window; consumers are
//! idempotent by event id beyond it).
//!
//! One relay per database publishes at a time. On PostgreSQL every batch runs in a
//! transaction that first takes `pg_try_advisory_xact_lock` (keyed by schema): the
//! relay holding it reads the head of the outbox, publishes, deletes and commits,
//! which releases the lock. A relay that does not get the lock skips the batch and
//! polls again later. Because a batch starts only after the previous batch's deletes
//! committed, every relay reads the true head, so publishes never overlap and never
//! leave `seq` order — for every subject and across subjects. `FOR UPDATE SKIP LOCKED`
//! was not chosen: it lets a second relay publish rows behind the ones the first one
//! is still publishing, which breaks per-subject order. The cost — one publisher per
//! database — is the price of that order; replicas take over within `poll_interval`.
//!
//! On SQLite (one process, `godel up`) there is one relay per database and the batch
//! runs without a transaction, so the single pooled connection is not held while
//! publishing.

use std::sync::Arc;
use std::time::Duration;

use godel_bus::Bus;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, TransactionTrait,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{TABLE, entity, to_message};
use crate::db::{Backend, Db};
use crate::error::StoreError;

/// First half of the PostgreSQL advisory-lock key held while relaying a batch (second
/// half: hash of the current schema).
const RELAY_LOCK_CLASS: i32 = 0x6764_6f01; // "gdo\x01"

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The `service` label of the relay's metrics (`scheduler`, `auth`, …).
    pub service: String,
    /// Most rows read and published per batch.
    pub batch_size: u32,
    /// How often to look for rows when nobody calls [`RelayNotifier::notify`] (rows
    /// written by other replicas, or after this relay could not take the lock).
    pub poll_interval: Duration,
    /// Wait after the first failure of a streak; doubled per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl RelayConfig {
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Wakes the relay at once; call it after committing a transaction that enqueued
/// events. Cheap to clone; notifications while the relay is busy are not lost.
#[derive(Debug, Clone)]
pub struct RelayNotifier(Arc<Notify>);

impl RelayNotifier {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Another relay holds the lock on this database (PostgreSQL only).
    NotLeader,
    /// `published` rows were published and deleted; `more` when the batch was full, so
    /// more rows may be waiting.
    Published { published: usize, more: bool },
}

/// Publishes the outbox of one database to the bus. See the module docs.
pub struct OutboxRelay {
    db: Db,
    bus: Arc<dyn Bus>,
    config: RelayConfig,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("backend", &self.db.backend())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    pub fn new(db: Db, bus: Arc<dyn Bus>, config: RelayConfig) -> Self {
        Self {
            db,
            bus,
            config,
            notify: Arc::new(Notify::new()),
        }
    }

    /// A handle that wakes this relay.
    pub fn notifier(&self) -> RelayNotifier {
        RelayNotifier(self.notify.clone())
    }

    /// Relays until `shutdown` is cancelled: a batch after another while batches come
    /// back full, then waits for a notification or `poll_interval`. On failure the
    /// rows stay, and the relay retries with exponential backoff, logging once per
    /// failure streak. Cancelling mid-batch is safe: unpublished and unacknowledged
    /// rows stay in the outbox and are published by the next relay.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let outcome = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                outcome = self.relay_batch() => outcome,
            };
            let (wait, wake_on_notify) = match outcome {
                Ok(outcome) => {
                    if failures > 0 {
                        tracing::info!(failures, "outbox relay recovered");
                        failures = 0;
                    }
                    match outcome {
                        BatchOutcome::Published { more: true, .. } => continue,
                        BatchOutcome::Published { more: false, .. } => {
                            (self.config.poll_interval, true)
                        }
                        BatchOutcome::NotLeader => (self.config.poll_interval, false),
                    }
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        tracing::warn!(
                            error = %godel_error::chain(&err),
                            "outbox relay failed; keeping the rows and retrying with backoff"
                        );
                    }
                    (self.backoff(failures), false)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.notify.notified(), if wake_on_notify => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        self.config
            .min_backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff)
    }

    /// Publishes and deletes one batch from the head of the outbox. On a publish
    /// failure the rows published before it are still deleted, and the error returned.
    pub async fn relay_batch(&self) -> Result<BatchOutcome, StoreError> {
        let started = std::time::Instant::now();
        let conn = self.db.conn();
        let outcome = match self.db.backend() {
            Backend::Sqlite => self.publish_head(conn).await,
            Backend::Postgres => {
                let txn = conn
                    .begin()
                    .await
                    .map_err(StoreError::query("starting a relay transaction", TABLE))?;
                if try_relay_lock(&txn).await? {
                    let outcome = self.publish_head(&txn).await;
                    txn.commit()
                        .await
                        .map_err(StoreError::query("committing deletes", TABLE))?;
                    outcome
                } else {
                    // Nothing was written; the rollback only hands the connection back.
                    let _ = txn.rollback().await;
                    Ok(BatchOutcome::NotLeader)
                }
            }
        }?;
        // Every replica reports the same figure (followers too), so any one will do.
        // An estimate read from the ends of the `seq` index: counting the rows would
        // cost a scan of the backlog on every batch, just when it is long.
        let pending = match outcome {
            BatchOutcome::Published { published: 0, .. } => 0,
            _ => super::pending_estimate(conn).await?,
        };
        metrics::gauge!("godel_outbox_pending", "service" => self.config.service.clone())
            .set(pending as f64);
        if let BatchOutcome::Published { published, more } = outcome {
            tracing::debug!(
                published,
                more,
                pending,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "relayed a batch"
            );
        }
        Ok(outcome)
    }

    /// Reads up to `batch_size` rows in `seq` order, publishes them in that order
    /// (pipelined where the bus can: sent together, acks awaited in order), then
    /// deletes the ones acknowledged before the first failure.
    async fn publish_head<C: ConnectionTrait>(&self, conn: &C) -> Result<BatchOutcome, StoreError> {
        let rows = entity::Entity::find()
            .order_by_asc(entity::Column::Seq)
            .limit(u64::from(self.config.batch_size))
            .all(conn)
            .await
            .map_err(StoreError::query("reading events", TABLE))?;
        let more = rows.len() >= self.config.batch_size as usize;

        let mut ids = Vec::with_capacity(rows.len());
        let mut msgs = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in rows {
            let seq = row.seq;
            match to_message(row) {
                Ok((id, msg)) => {
                    ids.push((seq, id));
                    msgs.push(msg);
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        let mut published = Vec::with_capacity(msgs.len());
        for ((seq, id), outcome) in ids.into_iter().zip(self.bus.publish_all(msgs).await) {
            match outcome {
                Ok(_ack) => published.push(seq),
                Err(source) => {
                    metrics::counter!("godel_outbox_publish_errors_total", "service" => self.config.service.clone())
                        .increment(1);
                    failure = Some(StoreError::Publish {
                        event_id: id,
                        source,
                    });
                    break;
                }
            }
        }

        if !published.is_empty() {
            entity::Entity::delete_many()
                .filter(entity::Column::Seq.is_in(published.iter().copied()))
                .exec(conn)
                .await
                .map_err(StoreError::query("deleting published events", TABLE))?;
            metrics::counter!("godel_outbox_published_total", "service" => self.config.service.clone())
                .increment(published.len() as u64);
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(BatchOutcome::Published {
                published: published.len(),
                more,
            }),
        }
    }
}

/// Takes the relay lock for the current transaction; false when another relay has it.
async fn try_relay_lock<C: ConnectionTrait>(txn: &C) -> Result<bool, StoreError> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock($1, hashtext(coalesce(current_schema(), ''))) AS locked",
            [RELAY_LOCK_CLASS.into()],
        ))
        .await
        .map_err(StoreError::query("taking the relay lock", TABLE))?;
    let Some(row) = row else {
        return Ok(false);
    };
    row.try_get::<bool>("", "locked")
        .map_err(StoreError::query("taking the relay lock", TABLE))
}
