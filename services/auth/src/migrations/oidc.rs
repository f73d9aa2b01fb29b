//! Single sign-on: sign-ins in progress (`oidc_logins`: state and nonce stored only
//! as hashes, single use, expiring) and the roles a provider's group mappings
//! granted (`idp_grants`), so later sign-ins withdraw exactly those. A user's
//! identity at a provider is the `(issuer, subject)` pair of `users` (unique index
//! `users_issuer_subject`).

use godel_store::sea_orm_migration::prelude::*;

pub(crate) struct CreateOidc;

impl MigrationName for CreateOidc {
    fn name(&self) -> &str {
        "m20261123_000002_auth_oidc"
    }
}

#[derive(DeriveIden)]
enum OidcLogins {
    Table,
    StateHash,
    Provider,
    NonceHash,
    PkceSalt,
    RedirectUri,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum IdpGrants {
    Table,
    Id,
    UserId,
    Provider,
    TeamId,
    Role,
    GrantedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Teams {
    Table,
    Id,
}

fn ts(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOidc {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OidcLogins::Table)
                    .col(
                        ColumnDef::new(OidcLogins::StateHash)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(OidcLogins::Provider).text().not_null())
                    .col(ColumnDef::new(OidcLogins::NonceHash).text().not_null())
                    .col(ColumnDef::new(OidcLogins::PkceSalt).blob().not_null())
                    .col(ColumnDef::new(OidcLogins::RedirectUri).text().not_null())
                    .col(ts(OidcLogins::CreatedAt))
                    .col(ts(OidcLogins::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("oidc_logins_expires_at")
                    .table(OidcLogins::Table)
                    .col(OidcLogins::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(IdpGrants::Table)
                    .col(
                        ColumnDef::new(IdpGrants::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(IdpGrants::UserId).uuid().not_null())
                    .col(ColumnDef::new(IdpGrants::Provider).text().not_null())
                    .col(ColumnDef::new(IdpGrants::TeamId).uuid().null())
                    .col(ColumnDef::new(IdpGrants::Role).text().not_null())
                    .col(ts(IdpGrants::GrantedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(IdpGrants::Table, IdpGrants::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(IdpGrants::Table, IdpGrants::TeamId)
                            .to(Teams::Table, Teams::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idp_grants_user_provider")
                    .table(IdpGrants::Table)
                    .col(IdpGrants::UserId)
                    .col(IdpGrants::Provider)
                    .to_owned(),
            )
            .await
    }
}
