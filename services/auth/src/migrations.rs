//! The auth service's schema migrations, applied in order on every start.

mod identity;
mod oidc;
mod org_roles;

use godel_store::sea_orm_migration::{MigrationTrait, MigratorTrait};

/// The auth database's migrations: the outbox, the identity tables, single
/// sign-on, then organisation roles.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> godel_store::sea_orm::DynIden {
        godel_store::sea_orm::sea_query::Alias::new("auth_migrations").into()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(godel_store::CreateOutbox),
            Box::new(identity::CreateIdentity),
            Box::new(oidc::CreateOidc),
            Box::new(org_roles::AddOrgRoles),
        ]
    }
}
