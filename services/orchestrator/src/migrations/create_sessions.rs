//! Sessions, their event logs and the task epoch fences.
//!
//! Every time is an integer count of microseconds since the Unix epoch, so
//! PostgreSQL and SQLite compare them the same way.
//!
//! | table | what |
//! |---|---|
//! | `sessions` | one row per session: its task and epoch, where it runs, its state, result and usage totals |
//! | `session_events` | the append-only event log, `(session_id, seq)` with `seq` 1, 2, 3, … |
//! | `session_task_fences` | the newest epoch a session was started with, per task (stale epochs are refused) |

use godel_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    TeamId,
    TaskId,
    Epoch,
    ProfileId,
    Adapter,
    Runtime,
    RepositoryUrl,
    GitRef,
    Branch,
    BaseCommit,
    OrchestratorId,
    State,
    Confinement,
    TaskType,
    Prompt,
    PayloadJson,
    MaxDurationMs,
    MaxCostMicroUsd,
    MaxTokens,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
    Error,
    ExitCode,
    ExitSignal,
    Outcome,
    CommitSha,
    DiffJson,
    InputTokens,
    OutputTokens,
    CostMicroUsd,
    LastEventOffset,
}

#[derive(DeriveIden)]
enum SessionEvents {
    Table,
    SessionId,
    Seq,
    Kind,
    PayloadJson,
    Raw,
    OccurredAt,
}

#[derive(DeriveIden)]
enum SessionTaskFences {
    Table,
    TaskId,
    TeamId,
    Epoch,
}

/// Creates the session tables.
pub(crate) struct CreateSessions;

impl MigrationName for CreateSessions {
    fn name(&self) -> &str {
        "m20261123_000001_orchestrator_sessions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSessions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let big = |c: Sessions| ColumnDef::new(c).big_integer().not_null().to_owned();
        let text = |c: Sessions| ColumnDef::new(c).text().not_null().to_owned();
        let opt_text = |c: Sessions| ColumnDef::new(c).text().null().to_owned();
        let opt_big = |c: Sessions| ColumnDef::new(c).big_integer().null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(text(Sessions::Id).primary_key())
                    .col(text(Sessions::TeamId))
                    .col(text(Sessions::TaskId))
                    .col(big(Sessions::Epoch))
                    .col(opt_text(Sessions::ProfileId))
                    .col(text(Sessions::Adapter))
                    .col(text(Sessions::Runtime))
                    .col(text(Sessions::RepositoryUrl))
                    .col(opt_text(Sessions::GitRef))
                    .col(opt_text(Sessions::Branch))
                    .col(opt_text(Sessions::BaseCommit))
                    .col(text(Sessions::OrchestratorId))
                    .col(text(Sessions::State))
                    .col(opt_text(Sessions::Confinement))
                    .col(text(Sessions::TaskType))
                    .col(text(Sessions::Prompt))
                    .col(text(Sessions::PayloadJson))
                    .col(opt_big(Sessions::MaxDurationMs))
                    .col(big(Sessions::MaxCostMicroUsd))
                    .col(big(Sessions::MaxTokens))
                    .col(big(Sessions::CreatedAt))
                    .col(opt_big(Sessions::StartedAt))
                    .col(opt_big(Sessions::FinishedAt))
                    .col(big(Sessions::UpdatedAt))
                    .col(opt_text(Sessions::Error))
                    .col(opt_big(Sessions::ExitCode))
                    .col(opt_text(Sessions::ExitSignal))
                    .col(opt_text(Sessions::Outcome))
                    .col(opt_text(Sessions::CommitSha))
                    .col(opt_text(Sessions::DiffJson))
                    .col(big(Sessions::InputTokens))
                    .col(big(Sessions::OutputTokens))
                    .col(big(Sessions::CostMicroUsd))
                    .col(big(Sessions::LastEventOffset))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sessions_task_epoch")
                    .table(Sessions::Table)
                    .col(Sessions::TaskId)
                    .col(Sessions::Epoch)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sessions_team_id")
                    .table(Sessions::Table)
                    .col(Sessions::TeamId)
                    .col(Sessions::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SessionEvents::Table)
                    .col(ColumnDef::new(SessionEvents::SessionId).text().not_null())
                    .col(ColumnDef::new(SessionEvents::Seq).big_integer().not_null())
                    .col(ColumnDef::new(SessionEvents::Kind).text().not_null())
                    .col(ColumnDef::new(SessionEvents::PayloadJson).text().not_null())
                    .col(ColumnDef::new(SessionEvents::Raw).text().not_null())
                    .col(
                        ColumnDef::new(SessionEvents::OccurredAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(SessionEvents::SessionId)
                            .col(SessionEvents::Seq),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SessionTaskFences::Table)
                    .col(
                        ColumnDef::new(SessionTaskFences::TaskId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(SessionTaskFences::TeamId).text().not_null())
                    .col(
                        ColumnDef::new(SessionTaskFences::Epoch)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            SessionTaskFences::Table.into_iden(),
            SessionEvents::Table.into_iden(),
            Sessions::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
