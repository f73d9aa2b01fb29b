//! Teams, users, memberships, custom roles, API keys, refresh-token families, signing
//! keys and quotas (see `docs/permissions.md` and the crate docs for what each holds).

use godel_store::sea_orm_migration::prelude::*;

pub(crate) struct CreateIdentity;

impl MigrationName for CreateIdentity {
    fn name(&self) -> &str {
        "m20261123_000001_auth_identity"
    }
}

#[derive(DeriveIden)]
enum Teams {
    Table,
    Id,
    Name,
    DisplayName,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Issuer,
    Subject,
    Email,
    DisplayName,
    OrgAdmin,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    TeamId,
    UserId,
    Roles,
    AddedAt,
}

#[derive(DeriveIden)]
enum Roles {
    Table,
    Id,
    TeamId,
    Name,
    Permissions,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TeamId,
    Name,
    Permissions,
    OrgAdmin,
    SecretHash,
    Prefix,
    CreatedBy,
    CreatedAt,
    ExpiresAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum RefreshFamilies {
    Table,
    Id,
    UserId,
    TeamId,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    RevokedReason,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    TokenHash,
    FamilyId,
    CreatedAt,
    RotatedAt,
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Kid,
    Algorithm,
    PrivateKey,
    PublicKey,
    CreatedAt,
    RetiredAt,
}

#[derive(DeriveIden)]
enum Quotas {
    Table,
    TeamId,
    MaxConcurrentSessions,
    MaxQueuedTasks,
    RateLimitPerMinute,
    MonthlyBudgetMicroUsd,
    UpdatedAt,
}

fn ts(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn ts_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

fn cascade_to_team(from: (impl IntoIden, impl IntoIden)) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from.0, from.1)
        .to(Teams::Table, Teams::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateIdentity {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Teams::Table)
                    .col(ColumnDef::new(Teams::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Teams::Name).text().not_null().unique_key())
                    .col(ColumnDef::new(Teams::DisplayName).text().not_null())
                    .col(ts(Teams::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(ColumnDef::new(Users::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Users::Issuer).text().not_null())
                    .col(ColumnDef::new(Users::Subject).text().not_null())
                    .col(ColumnDef::new(Users::Email).text().not_null())
                    .col(ColumnDef::new(Users::DisplayName).text().not_null())
                    .col(ColumnDef::new(Users::OrgAdmin).boolean().not_null())
                    .col(ts(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("users_issuer_subject")
                    .table(Users::Table)
                    .col(Users::Issuer)
                    .col(Users::Subject)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Members::Table)
                    .col(ColumnDef::new(Members::TeamId).uuid().not_null())
                    .col(ColumnDef::new(Members::UserId).uuid().not_null())
                    .col(ColumnDef::new(Members::Roles).json_binary().not_null())
                    .col(ts(Members::AddedAt))
                    .primary_key(Index::create().col(Members::TeamId).col(Members::UserId))
                    .foreign_key(&mut cascade_to_team((Members::Table, Members::TeamId)))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Members::Table, Members::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("members_user")
                    .table(Members::Table)
                    .col(Members::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Roles::Table)
                    .col(ColumnDef::new(Roles::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Roles::TeamId).uuid().not_null())
                    .col(ColumnDef::new(Roles::Name).text().not_null())
                    .col(ColumnDef::new(Roles::Permissions).json_binary().not_null())
                    .col(ts(Roles::CreatedAt))
                    .foreign_key(&mut cascade_to_team((Roles::Table, Roles::TeamId)))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("roles_team_name")
                    .table(Roles::Table)
                    .col(Roles::TeamId)
                    .col(Roles::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::TeamId).uuid().not_null())
                    .col(ColumnDef::new(ApiKeys::Name).text().not_null())
                    .col(
                        ColumnDef::new(ApiKeys::Permissions)
                            .json_binary()
                            .not_null(),
                    )
                    .col(ColumnDef::new(ApiKeys::OrgAdmin).boolean().not_null())
                    .col(ColumnDef::new(ApiKeys::SecretHash).text().not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).text().not_null())
                    .col(ColumnDef::new(ApiKeys::CreatedBy).text().not_null())
                    .col(ts(ApiKeys::CreatedAt))
                    .col(ts_null(ApiKeys::ExpiresAt))
                    .col(ts_null(ApiKeys::LastUsedAt))
                    .col(ts_null(ApiKeys::RevokedAt))
                    .foreign_key(&mut cascade_to_team((ApiKeys::Table, ApiKeys::TeamId)))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_team")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::TeamId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RefreshFamilies::Table)
                    .col(
                        ColumnDef::new(RefreshFamilies::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RefreshFamilies::UserId).uuid().not_null())
                    .col(ColumnDef::new(RefreshFamilies::TeamId).uuid().null())
                    .col(ts(RefreshFamilies::CreatedAt))
                    .col(ts(RefreshFamilies::ExpiresAt))
                    .col(ts_null(RefreshFamilies::RevokedAt))
                    .col(ColumnDef::new(RefreshFamilies::RevokedReason).text().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshFamilies::Table, RefreshFamilies::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(
                        ColumnDef::new(RefreshTokens::TokenHash)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RefreshTokens::FamilyId).uuid().not_null())
                    .col(ts(RefreshTokens::CreatedAt))
                    .col(ts_null(RefreshTokens::RotatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshTokens::Table, RefreshTokens::FamilyId)
                            .to(RefreshFamilies::Table, RefreshFamilies::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refresh_tokens_family")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::FamilyId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SigningKeys::Table)
                    .col(
                        ColumnDef::new(SigningKeys::Kid)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(SigningKeys::Algorithm).text().not_null())
                    .col(ColumnDef::new(SigningKeys::PrivateKey).blob().not_null())
                    .col(ColumnDef::new(SigningKeys::PublicKey).blob().not_null())
                    .col(ts(SigningKeys::CreatedAt))
                    .col(ts_null(SigningKeys::RetiredAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Quotas::Table)
                    .col(
                        ColumnDef::new(Quotas::TeamId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Quotas::MaxConcurrentSessions)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Quotas::MaxQueuedTasks).big_integer().null())
                    .col(
                        ColumnDef::new(Quotas::RateLimitPerMinute)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Quotas::MonthlyBudgetMicroUsd)
                            .big_integer()
                            .null(),
                    )
                    .col(ts(Quotas::UpdatedAt))
                    .foreign_key(&mut cascade_to_team((Quotas::Table, Quotas::TeamId)))
                    .to_owned(),
            )
            .await
    }
}
