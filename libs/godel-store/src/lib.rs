//! Storage for Godel services: connecting to PostgreSQL or SQLite with sea-orm,
//! per-service migrations, and the transactional outbox with its relay.
//!
//! Every service owns its database (PostgreSQL in production — optionally one schema
//! per service — and one SQLite file per service under `godel up`). A state change and
//! the events announcing it are written in one transaction ([`outbox::enqueue`]); the
//! [`OutboxRelay`] publishes them to the bus with the event id as message id and
//! deletes them after the publish ack.
//!
//! Wiring in a service:
//!
//! ```ignore
//! let db = godel_store::connect(&config.database).await?;
//! godel_store::migrate::<Migrator>(&db).await?;          // Migrator includes CreateOutbox
//! let relay = OutboxRelay::new(db.clone(), bus.clone(), RelayConfig::new("scheduler"));
//! let notifier = relay.notifier();
//! tokio::spawn(relay.run(shutdown.child_token()));
//! // in a handler:
//! db.transaction(|txn| Box::pin(async move {
//!     task.insert(txn).await?;
//!     outbox::enqueue(txn, &events).await?;
//!     Ok::<_, StoreError>(())
//! })).await?;
//! notifier.notify();
//! ```

mod config;
mod db;
mod error;
mod migrate;
pub mod outbox;

pub use config::{DatabaseConfig, SqliteOptions, SqliteSynchronous};
pub use db::{Backend, Db, connect};
pub use error::{StoreError, is_unavailable};
pub use migrate::{CreateOutbox, migrate};
pub use outbox::{OutboxEvent, OutboxRelay, RelayConfig, RelayNotifier};

/// The sea-orm and sea-orm-migration crates, re-exported so services use the same
/// versions.
pub use sea_orm;
pub use sea_orm_migration;
