//! What a submitter may say about where and how a task runs, and what a failure
//! report says about itself.
//!
//! | column | what |
//! |---|---|
//! | `tasks.labels` | free-form labels as a JSON object of strings (`{}` when none) |
//! | `tasks.profile_id` | the agent profile to run it with (`prf_…`), or NULL |
//! | `task_errors.code` | the reporter's snake_case error code (`''` when none) |
//! | `task_errors.orchestrator_id` | the orchestrator that held the lease, or NULL |

use godel_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Labels,
    ProfileId,
}

#[derive(DeriveIden)]
enum TaskErrors {
    Table,
    Code,
    OrchestratorId,
}

/// Adds `tasks.labels`, `tasks.profile_id`, `task_errors.code` and
/// `task_errors.orchestrator_id`.
pub(crate) struct AddTaskDetails;

impl MigrationName for AddTaskDetails {
    fn name(&self) -> &str {
        "m20250401_000001_scheduler_task_details"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddTaskDetails {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds a single column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(
                        ColumnDef::new(Tasks::Labels)
                            .text()
                            .not_null()
                            .default("{}"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(ColumnDef::new(Tasks::ProfileId).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TaskErrors::Table)
                    .add_column(
                        ColumnDef::new(TaskErrors::Code)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TaskErrors::Table)
                    .add_column(ColumnDef::new(TaskErrors::OrchestratorId).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [TaskErrors::OrchestratorId, TaskErrors::Code] {
            manager
                .alter_table(
                    Table::alter()
                        .table(TaskErrors::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::ProfileId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::Labels)
                    .to_owned(),
            )
            .await
    }
}
