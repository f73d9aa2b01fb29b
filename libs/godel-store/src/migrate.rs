//! Applying a service's migrations, and the outbox migration every service includes.
//!
//! Each service has its own `MigratorTrait` listing its migrations in order; it puts
//! [`CreateOutbox`] among them so the outbox table lives in its database:
//!
//! ```ignore
//! struct Migrator;
//! impl MigratorTrait for Migrator {
//!     fn migrations() -> Vec<Box<dyn MigrationTrait>> {
//!         vec![Box::new(godel_store::CreateOutbox), Box::new(m0002_tasks::Migration)]
//!     }
//! }
//! godel_store::migrate::<Migrator>(&db).await?;
//! ```

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DbBackend, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};

use crate::db::{Backend, Db};
use crate::error::StoreError;

/// First half of the PostgreSQL advisory-lock key taken while migrating; the second
/// half is a hash of the current schema, so services sharing a database in different
/// schemas do not wait for each other.
pub(crate) const MIGRATE_LOCK_CLASS: i32 = 0x6764_6d01; // "gdm\x01"

/// Applies the pending migrations of `M`, all in one transaction. Safe to call on
/// every start: applied migrations (recorded in `M`'s migration table) are skipped.
///
/// PostgreSQL: the transaction first takes a transaction-scoped advisory lock
/// (`pg_advisory_xact_lock`, keyed by the schema), so when two replicas start at once
/// the second waits until the first commits, then finds nothing pending. Migrations
/// that cannot run inside a transaction (`CREATE INDEX CONCURRENTLY`) are not
/// supported here.
///
/// SQLite: the transaction is `BEGIN IMMEDIATE`, which takes the write lock up front.
pub async fn migrate<M: MigratorTrait>(db: &Db) -> Result<(), StoreError> {
    let table = M::migration_table_name().to_string();
    let err = |source| StoreError::Migrate {
        table: table.clone(),
        source,
    };
    let txn = match db.backend() {
        Backend::Postgres => {
            let txn = db.conn().begin().await.map_err(err)?;
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
                [MIGRATE_LOCK_CLASS.into()],
            ))
            .await
            .map_err(err)?;
            txn
        }
        Backend::Sqlite => db
            .conn()
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(err)?,
    };
    M::up(&txn, None).await.map_err(err)?;
    txn.commit().await.map_err(err)
}

/// Creates the `outbox` table: events written in the same transaction as the state
/// change they announce, published and deleted by the [`OutboxRelay`](crate::OutboxRelay).
///
/// | column | type | |
/// |---|---|---|
/// | `seq` | bigint, autoincrement, primary key | publish order |
/// | `event_id` | uuid, unique | the `EventId`; the bus message id |
/// | `subject` | text | |
/// | `headers` | json (jsonb on PostgreSQL) | string → string |
/// | `payload` | bytes | |
/// | `created_at` | timestamp with time zone | |
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOutbox;

#[derive(DeriveIden)]
pub(crate) enum Outbox {
    Table,
    Seq,
    EventId,
    Subject,
    Headers,
    Payload,
    CreatedAt,
}

impl MigrationName for CreateOutbox {
    fn name(&self) -> &str {
        "m20250101_000000_godel_outbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOutbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Outbox::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Outbox::EventId)
                            .uuid()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Outbox::Subject).text().not_null())
                    .col(ColumnDef::new(Outbox::Headers).json_binary().not_null())
                    .col(ColumnDef::new(Outbox::Payload).blob().not_null())
                    .col(
                        ColumnDef::new(Outbox::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Outbox::Table).to_owned())
            .await
    }
}
