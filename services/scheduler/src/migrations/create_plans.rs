//! Plans and the dependency edges between their tasks, plus the orchestrator registry.
//!
//! | table | what |
//! |---|---|
//! | `plans` | one row per plan: team, name, idempotency key and fingerprint, last state |
//! | `task_dependencies` | one row per edge: `task_id` waits for `depends_on` |
//! | `tasks.plan_key` | the task's key within its plan |
//! | `orchestrators` | registered orchestrator instances and their last heartbeat |

use godel_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Plans {
    Table,
    Id,
    TeamId,
    Name,
    IdempotencyKey,
    Fingerprint,
    State,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum TaskDependencies {
    Table,
    TaskId,
    DependsOn,
    PlanId,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    PlanId,
    PlanKey,
    Seq,
    LeaseOwner,
    State,
}

#[derive(DeriveIden)]
enum Orchestrators {
    Table,
    Id,
    Capacity,
    Runtimes,
    Labels,
    Endpoint,
    Version,
    ActiveSessions,
    Draining,
    RegisteredAt,
    LastHeartbeat,
}

/// Creates the plan tables, `tasks.plan_key` and the orchestrator registry.
pub(crate) struct CreatePlans;

impl MigrationName for CreatePlans {
    fn name(&self) -> &str {
        "m20250301_000001_scheduler_plans"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePlans {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Plans::Table)
                    .col(ColumnDef::new(Plans::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Plans::TeamId).text().not_null())
                    .col(ColumnDef::new(Plans::Name).text().not_null())
                    .col(ColumnDef::new(Plans::IdempotencyKey).text().null())
                    .col(ColumnDef::new(Plans::Fingerprint).text().not_null())
                    .col(ColumnDef::new(Plans::State).text().not_null())
                    .col(ColumnDef::new(Plans::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Plans::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Plans::FinishedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("plans_team_idempotency_key")
                    .table(Plans::Table)
                    .col(Plans::TeamId)
                    .col(Plans::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TaskDependencies::Table)
                    .col(ColumnDef::new(TaskDependencies::TaskId).text().not_null())
                    .col(
                        ColumnDef::new(TaskDependencies::DependsOn)
                            .text()
                            .not_null(),
                    )
                    .col(ColumnDef::new(TaskDependencies::PlanId).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(TaskDependencies::TaskId)
                            .col(TaskDependencies::DependsOn),
                    )
                    .to_owned(),
            )
            .await?;
        // Finding the dependents of a task that just finished.
        manager
            .create_index(
                Index::create()
                    .name("task_dependencies_depends_on")
                    .table(TaskDependencies::Table)
                    .col(TaskDependencies::DependsOn)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("task_dependencies_plan")
                    .table(TaskDependencies::Table)
                    .col(TaskDependencies::PlanId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(ColumnDef::new(Tasks::PlanKey).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tasks_plan")
                    .table(Tasks::Table)
                    .col(Tasks::PlanId)
                    .col(Tasks::Seq)
                    .to_owned(),
            )
            .await?;
        // An orchestrator's load: the tasks it holds.
        manager
            .create_index(
                Index::create()
                    .name("tasks_lease_owner")
                    .table(Tasks::Table)
                    .col(Tasks::LeaseOwner)
                    .col(Tasks::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Orchestrators::Table)
                    .col(
                        ColumnDef::new(Orchestrators::Id)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Orchestrators::Capacity)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Orchestrators::Runtimes).text().not_null())
                    .col(ColumnDef::new(Orchestrators::Labels).text().not_null())
                    .col(ColumnDef::new(Orchestrators::Endpoint).text().not_null())
                    .col(ColumnDef::new(Orchestrators::Version).text().not_null())
                    .col(
                        ColumnDef::new(Orchestrators::ActiveSessions)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Orchestrators::Draining).integer().not_null())
                    .col(
                        ColumnDef::new(Orchestrators::RegisteredAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Orchestrators::LastHeartbeat)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("tasks_plan")
                    .table(Tasks::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::PlanKey)
                    .to_owned(),
            )
            .await?;
        for table in [
            Orchestrators::Table.into_iden(),
            TaskDependencies::Table.into_iden(),
            Plans::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
