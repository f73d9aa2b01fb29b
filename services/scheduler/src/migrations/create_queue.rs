//! The task queue: tasks, their error history, per-team queue settings and the
//! weighted-fair-queuing clock.
//!
//! Every time is an integer count of microseconds since the Unix epoch, read from the
//! database's clock, so PostgreSQL and SQLite compare them the same way.
//!
//! | table | what |
//! |---|---|
//! | `tasks` | one row per task; `seq` orders FIFO, `id` is the `tsk_…` id |
//! | `task_errors` | every failed attempt (and expired lease) of a task, for the DLQ |
//! | `team_queues` | per-team weight, limits and WFQ finish tag |
//! | `queue_clock` | the single WFQ virtual time row |

use godel_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Seq,
    Id,
    TeamId,
    PlanId,
    TaskType,
    Priority,
    PayloadJson,
    IdempotencyKey,
    State,
    Epoch,
    LeaseOwner,
    LeaseExpiresAt,
    Attempts,
    MaxAttempts,
    BackoffBaseMs,
    BackoffMaxMs,
    NotBefore,
    CreatedAt,
    UpdatedAt,
    LastError,
    ResultJson,
}

#[derive(DeriveIden)]
enum TaskErrors {
    Table,
    Seq,
    TaskId,
    TeamId,
    Attempt,
    Epoch,
    Message,
    Retryable,
    OccurredAt,
}

#[derive(DeriveIden)]
enum TeamQueues {
    Table,
    TeamId,
    Weight,
    MaxConcurrent,
    MaxQueued,
    FinishTag,
}

#[derive(DeriveIden)]
enum QueueClock {
    Table,
    Id,
    Vtime,
}

/// Creates the queue tables and the indexes that keep claiming cheap.
pub(crate) struct CreateQueue;

impl MigrationName for CreateQueue {
    fn name(&self) -> &str {
        "m20250201_000001_scheduler_queue"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateQueue {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .col(
                        ColumnDef::new(Tasks::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Tasks::Id).text().not_null().unique_key())
                    .col(ColumnDef::new(Tasks::TeamId).text().not_null())
                    .col(ColumnDef::new(Tasks::PlanId).text().null())
                    .col(ColumnDef::new(Tasks::TaskType).text().not_null())
                    .col(ColumnDef::new(Tasks::Priority).integer().not_null())
                    .col(ColumnDef::new(Tasks::PayloadJson).text().not_null())
                    .col(ColumnDef::new(Tasks::IdempotencyKey).text().null())
                    .col(ColumnDef::new(Tasks::State).text().not_null())
                    .col(ColumnDef::new(Tasks::Epoch).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::LeaseOwner).text().null())
                    .col(ColumnDef::new(Tasks::LeaseExpiresAt).big_integer().null())
                    .col(ColumnDef::new(Tasks::Attempts).integer().not_null())
                    .col(ColumnDef::new(Tasks::MaxAttempts).integer().not_null())
                    .col(
                        ColumnDef::new(Tasks::BackoffBaseMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Tasks::BackoffMaxMs).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::NotBefore).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::LastError).text().null())
                    .col(ColumnDef::new(Tasks::ResultJson).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tasks_team_idempotency_key")
                    .table(Tasks::Table)
                    .col(Tasks::TeamId)
                    .col(Tasks::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Claiming: the ready tasks of one team, best first.
        manager
            .create_index(
                Index::create()
                    .name("tasks_ready")
                    .table(Tasks::Table)
                    .col(Tasks::State)
                    .col(Tasks::TeamId)
                    .col((Tasks::Priority, IndexOrder::Desc))
                    .col(Tasks::Seq)
                    .to_owned(),
            )
            .await?;
        // The sweeper: leases by expiry.
        manager
            .create_index(
                Index::create()
                    .name("tasks_lease_expiry")
                    .table(Tasks::Table)
                    .col(Tasks::State)
                    .col(Tasks::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;
        // Listing a team's tasks (and its dead letters) by id.
        manager
            .create_index(
                Index::create()
                    .name("tasks_team_state_id")
                    .table(Tasks::Table)
                    .col(Tasks::TeamId)
                    .col(Tasks::State)
                    .col(Tasks::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TaskErrors::Table)
                    .col(
                        ColumnDef::new(TaskErrors::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(TaskErrors::TaskId).text().not_null())
                    .col(ColumnDef::new(TaskErrors::TeamId).text().not_null())
                    .col(ColumnDef::new(TaskErrors::Attempt).integer().not_null())
                    .col(ColumnDef::new(TaskErrors::Epoch).big_integer().not_null())
                    .col(ColumnDef::new(TaskErrors::Message).text().not_null())
                    .col(ColumnDef::new(TaskErrors::Retryable).integer().not_null())
                    .col(
                        ColumnDef::new(TaskErrors::OccurredAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("task_errors_task")
                    .table(TaskErrors::Table)
                    .col(TaskErrors::TaskId)
                    .col(TaskErrors::Seq)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TeamQueues::Table)
                    .col(
                        ColumnDef::new(TeamQueues::TeamId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(TeamQueues::Weight).integer().not_null())
                    .col(
                        ColumnDef::new(TeamQueues::MaxConcurrent)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(TeamQueues::MaxQueued).big_integer().null())
                    .col(ColumnDef::new(TeamQueues::FinishTag).double().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QueueClock::Table)
                    .col(
                        ColumnDef::new(QueueClock::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(QueueClock::Vtime).double().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("INSERT INTO queue_clock (id, vtime) VALUES (1, 0.0)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            QueueClock::Table.into_iden(),
            TeamQueues::Table.into_iden(),
            TaskErrors::Table.into_iden(),
            Tasks::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
