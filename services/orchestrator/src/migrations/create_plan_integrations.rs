//! Plan integration: the integration branch of each plan this orchestrator ran tasks
//! of, so rollback and reads work after a restart, and what the quality gate and the
//! merge did for each session.
//!
//! | table / column | what |
//! |---|---|
//! | `plan_integrations` | one row per plan: team, repository (as the tasks named it and the local repository the branch lives in), branch, base and head commits, `open` or `rolled_back`, the merged task ids (JSON array, merge order), why it was rolled back, times |
//! | `sessions.integration_json` | the gate and merge outcome of a session, and the code of a failure retrying cannot fix |

use godel_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum PlanIntegrations {
    Table,
    PlanId,
    TeamId,
    RepositoryUrl,
    RepoPath,
    Branch,
    BaseCommit,
    HeadCommit,
    State,
    MergedTaskIds,
    Reason,
    CreatedAt,
    UpdatedAt,
    RolledBackAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    IntegrationJson,
}

/// Creates `plan_integrations` and adds `sessions.integration_json`.
pub(crate) struct CreatePlanIntegrations;

impl MigrationName for CreatePlanIntegrations {
    fn name(&self) -> &str {
        "m20261123_000004_orchestrator_plan_integrations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePlanIntegrations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text = |c: PlanIntegrations| ColumnDef::new(c).text().not_null().to_owned();
        let time = |c: PlanIntegrations| ColumnDef::new(c).big_integer().not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(PlanIntegrations::Table)
                    .col(text(PlanIntegrations::PlanId).primary_key())
                    .col(text(PlanIntegrations::TeamId))
                    .col(text(PlanIntegrations::RepositoryUrl))
                    .col(text(PlanIntegrations::RepoPath))
                    .col(text(PlanIntegrations::Branch))
                    .col(text(PlanIntegrations::BaseCommit))
                    .col(text(PlanIntegrations::HeadCommit))
                    .col(text(PlanIntegrations::State))
                    .col(text(PlanIntegrations::MergedTaskIds))
                    .col(ColumnDef::new(PlanIntegrations::Reason).text().null())
                    .col(time(PlanIntegrations::CreatedAt))
                    .col(time(PlanIntegrations::UpdatedAt))
                    .col(
                        ColumnDef::new(PlanIntegrations::RolledBackAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .add_column(ColumnDef::new(Sessions::IntegrationJson).text().null())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .drop_column(Sessions::IntegrationJson)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(PlanIntegrations::Table).to_owned())
            .await?;
        Ok(())
    }
}
