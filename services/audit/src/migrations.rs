//! The audit service's schema migrations, applied in order on every start.
//!
//! | table | columns | |
//! |---|---|---|
//! | `audit_chain` | `sequence` bigint PK (from 1, no gaps), `record_id` text unique, `occurred_at` bigint (ns since the Unix epoch), `team_id` text (`''` for none), `payload_digest`, `prev_hash`, `hash` (hex SHA-256) | immutable; on PostgreSQL a trigger rejects UPDATE, DELETE and TRUNCATE |
//! | `audit_payload` | `sequence` bigint PK, `actor_kind`, `actor_id`, `actor_team_id`, `actor_roles` (JSON array), `action`, `resource`, `outcome`, `trace_id`, `client_ip`, `details`, `redacted`, `erased` (scrubbed by a subject erasure: its digest no longer applies) | may be scrubbed or removed by retention and erasure |
//! | `audit_team_retention` | `team_id` text PK, `period_secs` bigint (0: forever), `updated_at` bigint (ns) | retention overrides set through the API |

use godel_store::sea_orm::{ConnectionTrait, DbBackend, DbErr};
use godel_store::sea_orm_migration::{
    MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait,
};

/// Every migration of the audit database, in order (the outbox first).
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> godel_store::sea_orm::DynIden {
        godel_store::sea_orm::sea_query::Alias::new("audit_migrations").into()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(godel_store::CreateOutbox),
            Box::new(CreateChain),
            Box::new(AppendOnlyTrigger),
            Box::new(ErasedColumn),
            Box::new(TeamRetentionTable),
        ]
    }
}

struct CreateChain;

impl MigrationName for CreateChain {
    fn name(&self) -> &str {
        "m20251123_000001_audit_chain"
    }
}

const CREATE_CHAIN: &[&str] = &[
    "CREATE TABLE audit_chain (
        sequence BIGINT NOT NULL PRIMARY KEY CHECK (sequence > 0),
        record_id TEXT NOT NULL UNIQUE,
        occurred_at BIGINT NOT NULL,
        team_id TEXT NOT NULL,
        payload_digest TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )",
    "CREATE INDEX audit_chain_team ON audit_chain (team_id, sequence)",
    "CREATE INDEX audit_chain_occurred ON audit_chain (occurred_at)",
    "CREATE TABLE audit_payload (
        sequence BIGINT NOT NULL PRIMARY KEY,
        actor_kind INTEGER NOT NULL,
        actor_id TEXT NOT NULL,
        actor_team_id TEXT NOT NULL,
        actor_roles TEXT NOT NULL,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        outcome INTEGER NOT NULL,
        trace_id TEXT NOT NULL,
        client_ip TEXT NOT NULL,
        details TEXT NOT NULL,
        redacted BOOLEAN NOT NULL
    )",
    "CREATE INDEX audit_payload_actor ON audit_payload (actor_id)",
    "CREATE INDEX audit_payload_trace ON audit_payload (trace_id)",
    "CREATE INDEX audit_payload_resource ON audit_payload (resource)",
];

#[async_trait::async_trait]
impl MigrationTrait for CreateChain {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for sql in CREATE_CHAIN {
            manager.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

/// PostgreSQL only: rejects UPDATE, DELETE and TRUNCATE on `audit_chain`. The service's
/// database role should also lack those privileges (`REVOKE UPDATE, DELETE, TRUNCATE
/// ON audit_chain FROM <role>`): a deployment step, since the migrating role owns the
/// table.
struct AppendOnlyTrigger;

impl MigrationName for AppendOnlyTrigger {
    fn name(&self) -> &str {
        "m20251123_000002_audit_chain_append_only"
    }
}

const APPEND_ONLY: &[&str] = &[
    "CREATE FUNCTION audit_chain_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
         RAISE EXCEPTION 'audit_chain is append-only: % is not allowed', TG_OP
             USING ERRCODE = 'insufficient_privilege';
     END
     $$",
    "CREATE TRIGGER audit_chain_no_change BEFORE UPDATE OR DELETE ON audit_chain
     FOR EACH ROW EXECUTE FUNCTION audit_chain_append_only()",
    "CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
     FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_append_only()",
];

#[async_trait::async_trait]
impl MigrationTrait for AppendOnlyTrigger {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        for sql in APPEND_ONLY {
            manager.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

/// `audit_payload.erased`: set when a subject erasure scrubbed the payload, whose
/// digest then no longer applies.
struct ErasedColumn;

impl MigrationName for ErasedColumn {
    fn name(&self) -> &str {
        "m20251123_000003_audit_payload_erased"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ErasedColumn {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE audit_payload ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE",
            )
            .await?;
        Ok(())
    }
}

/// `audit_team_retention`: per-team retention overrides set through the API.
struct TeamRetentionTable;

impl MigrationName for TeamRetentionTable {
    fn name(&self) -> &str {
        "m20251123_000004_audit_team_retention"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for TeamRetentionTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE audit_team_retention (
                    team_id TEXT NOT NULL PRIMARY KEY,
                    period_secs BIGINT NOT NULL CHECK (period_secs >= 0),
                    updated_at BIGINT NOT NULL
                )",
            )
            .await?;
        Ok(())
    }
}
