//! The scheduler service's schema migrations, applied in order on every start.

mod add_task_details;
mod create_leadership;
mod create_plans;
mod create_profiles;
mod create_queue;

use godel_store::sea_orm_migration::{MigrationTrait, MigratorTrait};

pub(crate) use add_task_details::AddTaskDetails;
pub(crate) use create_leadership::CreateLeadership;
pub(crate) use create_plans::CreatePlans;
pub(crate) use create_profiles::CreateProfiles;
pub(crate) use create_queue::CreateQueue;

/// Every migration of the scheduler's database, in order (the outbox, the queue, plans and
/// the orchestrator registry, then task labels and profiles and error codes, then leadership of the dispatch loop, then agent profiles).
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> godel_store::sea_orm::DynIden {
        godel_store::sea_orm::sea_query::Alias::new("scheduler_migrations").into()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(godel_store::CreateOutbox),
            Box::new(CreateQueue),
            Box::new(CreatePlans),
            Box::new(AddTaskDetails),
            Box::new(CreateLeadership),
            Box::new(CreateProfiles),
        ]
    }
}
