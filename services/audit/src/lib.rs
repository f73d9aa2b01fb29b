//! The audit service: the append-only, hash-chained, signed audit log of every API call and state change.
//!
//! Owns (DESIGN.md §2): audit records, chain heads and checkpoints. A library with [`serve`] (production: its own
//! database and NATS) and [`start`] (dependencies passed in, as `godel up` does with
//! the in-process bus); `main.rs` only calls [`serve`].
//!
//! How the log is built:
//!
//! - **Storage** ([`Migrator`]): `audit_chain` holds, per record, its sequence (from 1,
//!   without gaps), id, time, team, the digest of its payload and the chain hashes;
//!   `audit_payload` holds the record's contents. The chain covers the payload only
//!   through its digest, so retention and erasure may remove or scrub payload rows
//!   and the chain still verifies (see [`canonical`] for the encoding).
//! - **Append** ([`AuditLog::append`]): records are redacted ([`redact`]), then chained
//!   in one transaction per batch, appenders serialized by an advisory lock
//!   (PostgreSQL) or the write lock (SQLite); idempotent by record id.
//! - **Checkpoints** ([`Checkpointer`]): Ed25519 signatures over (sequence, head hash,
//!   time), one file each in `checkpoint.dir`, every `checkpoint.every_records`
//!   records and every `checkpoint.interval`.
//! - **Verify** ([`AuditLog::verify`]): walks the chain in pages and reports the first
//!   damage ([`DamageKind`]).
//! - **Intake** ([`intake`]): a durable bus consumer records every team event,
//!   idempotent by the event id, acked only after the append committed.
//! - **Retention and erasure** ([`AuditLog::apply_retention`], on a timer and on
//!   request, and [`AuditLog::erase_subject`]): remove expired payloads or scrub one
//!   person's data from payloads; the chain rows stay. Each appends, in the same
//!   transaction, a record of what it did and who asked (never the removed data),
//!   which is what lets `verify` accept those payloads ([`coverage`]): a payload
//!   removed or marked erased without such a record is reported as damage.
//!   Per-team periods come from the configuration and from overrides set through
//!   the API ([`AuditLog::set_team_retention`]).
//! - **Append-only**: on PostgreSQL a trigger rejects UPDATE, DELETE and TRUNCATE on
//!   `audit_chain`. Deployments should also `REVOKE UPDATE, DELETE, TRUNCATE ON
//!   audit_chain` from the service's role, and keep the checkpoint directory and the
//!   signing key where that role's database access cannot reach them.

pub mod canonical;
mod checkpoint;
mod config;
pub mod coverage;
mod error;
mod grpc;
pub mod intake;
mod keys;
mod log;
mod migrations;
mod record;
pub mod redact;
mod retention;
mod store;
mod verify;

use std::sync::Arc;

use godel_backend::{Backend, BackendError};
use godel_runtime::{RunningService, Service};
use tokio_util::sync::CancellationToken;

pub use checkpoint::{Checkpoint, Checkpointer};
pub use config::{
    AuditConfig, CheckpointConfig, PatternConfig, RedactionConfig, RetentionConfig, TeamRetention,
};
pub use error::AuditError;
pub use godel_backend::Dependencies;
pub use grpc::AuditGrpc;
pub use keys::KeyError;
pub use log::AuditLog;
pub use migrations::Migrator;
pub use record::{Actor, ActorKind, NewRecord, Outcome, Record, RecordBody};
pub use retention::{
    ErasureOutcome, PolicySource, Requester, RetentionOutcome, RetentionPolicy, TeamPolicy,
};
pub use store::{AppendOutcome, Filter};
pub use verify::{DamageKind, Damaged, VerifyReport, verify_offline};

/// The service name: health-check name, metrics label, outbox relay name.
pub const SERVICE: &str = "audit";

/// Why the audit service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the audit service cannot start")]
    Backend(#[from] BackendError),
    #[error("the audit log cannot be opened")]
    Log(#[from] AuditError),
    #[error("the audit service cannot reach the auth service's key set")]
    Identity(#[from] godel_identity::KeySourceError),
    #[error("the audit service failed")]
    Runtime(#[source] godel_runtime::RuntimeError),
}

/// Runs the service until `shutdown` is cancelled and it has drained.
pub async fn serve(config: AuditConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let deps = Dependencies::connect(&config.bus).await?;
    start(config, deps, shutdown)
        .await?
        .wait()
        .await
        .map_err(Error::Runtime)
}

/// Opens and migrates the database, loads the keys, then starts the listeners, the
/// outbox relay and the checkpoint timer. Returns once the service is listening;
/// [`RunningService::wait`] waits for its end.
pub async fn start(
    config: AuditConfig,
    deps: Dependencies,
    shutdown: CancellationToken,
) -> Result<RunningService, Error> {
    let verifier = config.identity.verifier()?;
    start_with_verifier(config, deps, verifier, shutdown).await
}

/// [`start`] with callers verified by `verifier` instead of one built from
/// `identity` (in-process key sets, tests).
pub async fn start_with_verifier(
    config: AuditConfig,
    deps: Dependencies,
    verifier: godel_identity::CallerVerifier,
    shutdown: CancellationToken,
) -> Result<RunningService, Error> {
    let backend = Backend::open::<Migrator>(SERVICE, &config.database, deps).await?;
    let log = Arc::new(AuditLog::open(backend.db().clone(), &config)?);
    let interval = config.checkpoint.interval;
    let timer_log = log.clone();
    let intake_log = log.clone();
    let retention_log = log.clone();
    let bus = backend.bus().clone();
    let service = Service::new(SERVICE, config.server)
        .reflection(godel_proto::FILE_DESCRIPTOR_SET)
        .grpc_service(grpc::server(log, verifier))
        .background("audit-checkpoints", move |stop| async move {
            checkpoint_timer(&timer_log, interval, stop).await;
            Ok(())
        })
        .background("audit-retention", move |stop| async move {
            retention_timer(&retention_log, stop).await;
            Ok(())
        })
        .background("audit-intake", move |stop| async move {
            intake::run(intake_log, bus, stop).await?;
            Ok(())
        });
    backend
        .install(service)
        .start(shutdown)
        .await
        .map_err(Error::Runtime)
}

/// Removes expired payloads every `retention.interval` until stopped (the periods
/// are read again each time, so overrides set through the API apply).
async fn retention_timer(log: &AuditLog, stop: CancellationToken) {
    let interval = log.retention_config().interval;
    if interval.is_zero() {
        stop.cancelled().await;
        return;
    }
    let by = retention::Requester::service("scheduled retention");
    loop {
        if let Err(err) = log.apply_retention(chrono::Utc::now(), &by).await {
            tracing::warn!(error = %err, "removing expired audit payloads failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Writes a checkpoint every `interval` (when records arrived) and a last one when
/// stopped.
async fn checkpoint_timer(log: &AuditLog, interval: std::time::Duration, stop: CancellationToken) {
    loop {
        if interval.is_zero() {
            stop.cancelled().await;
        } else {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
        if let Err(err) = log.checkpoint().await {
            tracing::warn!(error = %err, "writing an audit checkpoint failed");
        }
        if stop.is_cancelled() {
            return;
        }
    }
}
