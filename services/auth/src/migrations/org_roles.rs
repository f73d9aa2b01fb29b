//! Organisation roles besides `org-admin` (which stays the `org_admin` flag):
//! `org_roles`, a JSON array of role names, on users (`org-auditor`) and API keys
//! (`org-auditor`, `audit-writer`). Existing rows hold none.

use godel_store::sea_orm_migration::prelude::*;

pub(crate) struct AddOrgRoles;

impl MigrationName for AddOrgRoles {
    fn name(&self) -> &str {
        "m20261123_000003_auth_org_roles"
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    OrgRoles,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    OrgRoles,
}

fn org_roles(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .json_binary()
        .not_null()
        .default("[]")
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for AddOrgRoles {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(org_roles(Users::OrgRoles))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(org_roles(ApiKeys::OrgRoles))
                    .to_owned(),
            )
            .await
    }
}
