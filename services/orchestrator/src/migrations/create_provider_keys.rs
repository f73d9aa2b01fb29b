//! Encrypted provider keys and the LLM proxy's session tokens.
//!
//! | table | what |
//! |---|---|
//! | `provider_keys` | one row per team provider key: metadata, the secret sealed under its data key, the data key wrapped by the KEK (base64) |
//! | `session_tokens` | the SHA-256 of each session's proxy token, bound to team, session, task and budget, with its expiry and revocation |

use godel_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum ProviderKeys {
    Table,
    Id,
    TeamId,
    Provider,
    Name,
    Hint,
    Version,
    Ciphertext,
    WrappedKey,
    KekId,
    CreatedAt,
    RotatedAt,
}

#[derive(DeriveIden)]
enum SessionTokens {
    Table,
    TokenHash,
    SessionId,
    TeamId,
    TaskId,
    MaxCostMicroUsd,
    MaxTokens,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

/// Creates `provider_keys` and `session_tokens`.
pub(crate) struct CreateProviderKeys;

impl MigrationName for CreateProviderKeys {
    fn name(&self) -> &str {
        "m20261123_000002_orchestrator_provider_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateProviderKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text = |c: ProviderKeys| ColumnDef::new(c).text().not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(ProviderKeys::Table)
                    .col(text(ProviderKeys::Id).primary_key())
                    .col(text(ProviderKeys::TeamId))
                    .col(text(ProviderKeys::Provider))
                    .col(text(ProviderKeys::Name))
                    .col(text(ProviderKeys::Hint))
                    .col(
                        ColumnDef::new(ProviderKeys::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(text(ProviderKeys::Ciphertext))
                    .col(text(ProviderKeys::WrappedKey))
                    .col(text(ProviderKeys::KekId))
                    .col(
                        ColumnDef::new(ProviderKeys::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(ProviderKeys::RotatedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("provider_keys_team_provider_name")
                    .table(ProviderKeys::Table)
                    .col(ProviderKeys::TeamId)
                    .col(ProviderKeys::Provider)
                    .col(ProviderKeys::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        let big = |c: SessionTokens| ColumnDef::new(c).big_integer().not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(SessionTokens::Table)
                    .col(
                        ColumnDef::new(SessionTokens::TokenHash)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(SessionTokens::SessionId).text().not_null())
                    .col(ColumnDef::new(SessionTokens::TeamId).text().not_null())
                    .col(ColumnDef::new(SessionTokens::TaskId).text().not_null())
                    .col(big(SessionTokens::MaxCostMicroUsd))
                    .col(big(SessionTokens::MaxTokens))
                    .col(big(SessionTokens::CreatedAt))
                    .col(big(SessionTokens::ExpiresAt))
                    .col(
                        ColumnDef::new(SessionTokens::RevokedAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("session_tokens_session_id")
                    .table(SessionTokens::Table)
                    .col(SessionTokens::SessionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            SessionTokens::Table.into_iden(),
            ProviderKeys::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
