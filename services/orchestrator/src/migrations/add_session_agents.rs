//! What identifies a session's agent process after the orchestrator died: its
//! process group id, its leader's start time and the boot id (see
//! `runtime::reaper`), so the next start of the orchestrator stops an orphaned
//! agent and never an unrelated process that reuses the number.
//!
//! | column of `sessions` | what |
//! |---|---|
//! | `agent_pgid` | the agent's process group id, once it started |
//! | `agent_start_ticks` | its leader's start time, clock ticks since boot |
//! | `agent_boot_id` | the boot it ran in |

use godel_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    AgentPgid,
    AgentStartTicks,
    AgentBootId,
}

/// Adds the agent columns to `sessions`.
pub(crate) struct AddSessionAgents;

impl MigrationName for AddSessionAgents {
    fn name(&self) -> &str {
        "m20261123_000003_orchestrator_session_agents"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddSessionAgents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            ColumnDef::new(Sessions::AgentPgid)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Sessions::AgentStartTicks)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Sessions::AgentBootId)
                .text()
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Sessions::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Sessions::AgentBootId,
            Sessions::AgentStartTicks,
            Sessions::AgentPgid,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Sessions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
