//! The audit service's schema migrations, applied in order on every start.

use godel_store::sea_orm_migration::{MigrationTrait, MigratorTrait};

pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> godel_store::sea_orm::DynIden {
        godel_store::sea_orm::sea_query::Alias::new("audit_migrations").into()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(godel_store::CreateOutbox)]
    }
}
