//! The orchestrator service's schema migrations, applied in order on every start.

mod add_session_agents;
mod create_plan_integrations;
mod create_provider_keys;
mod create_sessions;

use godel_store::sea_orm_migration::{MigrationTrait, MigratorTrait};

pub(crate) use add_session_agents::AddSessionAgents;
pub(crate) use create_plan_integrations::CreatePlanIntegrations;
pub(crate) use create_provider_keys::CreateProviderKeys;
pub(crate) use create_sessions::CreateSessions;

/// Every migration of the orchestrator's database, in order (the outbox, then
/// sessions, their event logs and task epoch fences, then provider keys and
/// session tokens, then what identifies each session's agent process across a
/// restart, then plan integration branches and each session's gate and merge).
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> godel_store::sea_orm::DynIden {
        godel_store::sea_orm::sea_query::Alias::new("orchestrator_migrations").into()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(godel_store::CreateOutbox),
            Box::new(CreateSessions),
            Box::new(CreateProviderKeys),
            Box::new(AddSessionAgents),
            Box::new(CreatePlanIntegrations),
        ]
    }
}
