//! Agent profiles: a team's named ways of running agents (adapter, model, the task
//! types handled, runtime, limits, expected cost, preference). Built-in profiles
//! live in code, not in this table; a team profile of the same name replaces one.
//!
//! | column | what |
//! |---|---|
//! | `profiles.id` | `prf_…` |
//! | `profiles.team_id`, `profiles.name` | unique together |
//! | `profiles.task_types` | JSON array of task type names |
//! | `profiles.max_duration_ms`, `max_tokens`, `max_cost_micro_usd` | 0: no bound |
//! | `profiles.created_at`, `updated_at` | microseconds |

use godel_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Profiles {
    Table,
    Id,
    TeamId,
    Name,
    Adapter,
    Model,
    TaskTypes,
    Runtime,
    MaxDurationMs,
    MaxTokens,
    MaxCostMicroUsd,
    EstimatedCostMicroUsd,
    Preference,
    CreatedAt,
    UpdatedAt,
}

/// Creates `profiles`.
pub(crate) struct CreateProfiles;

impl MigrationName for CreateProfiles {
    fn name(&self) -> &str {
        "m20261123_000001_scheduler_profiles"
    }
}

fn big(col: Profiles) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn text(col: Profiles) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateProfiles {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Profiles::Table)
                    .if_not_exists()
                    .col(text(Profiles::Id).primary_key())
                    .col(text(Profiles::TeamId))
                    .col(text(Profiles::Name))
                    .col(text(Profiles::Adapter))
                    .col(text(Profiles::Model))
                    .col(text(Profiles::TaskTypes))
                    .col(text(Profiles::Runtime))
                    .col(big(Profiles::MaxDurationMs))
                    .col(big(Profiles::MaxTokens))
                    .col(big(Profiles::MaxCostMicroUsd))
                    .col(big(Profiles::EstimatedCostMicroUsd))
                    .col(ColumnDef::new(Profiles::Preference).integer().not_null())
                    .col(big(Profiles::CreatedAt))
                    .col(big(Profiles::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("profiles_team_name")
                    .table(Profiles::Table)
                    .col(Profiles::TeamId)
                    .col(Profiles::Name)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Profiles::Table).to_owned())
            .await
    }
}
