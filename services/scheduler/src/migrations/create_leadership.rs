//! Leadership of the scheduler's singleton loops.
//!
//! | column | what |
//! |---|---|
//! | `leader_leases.name` | the loop led (`dispatch`) |
//! | `leader_leases.holder` | the replica holding it (a random id per process) |
//! | `leader_leases.epoch` | goes up by one whenever leadership changes hands |
//! | `leader_leases.expires_at` | database microseconds; past it anyone may take over |

use godel_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum LeaderLeases {
    Table,
    Name,
    Holder,
    Epoch,
    ExpiresAt,
}

/// Creates `leader_leases`.
pub(crate) struct CreateLeadership;

impl MigrationName for CreateLeadership {
    fn name(&self) -> &str {
        "m20250501_000001_scheduler_leadership"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateLeadership {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LeaderLeases::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(LeaderLeases::Name)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LeaderLeases::Holder).text().not_null())
                    .col(ColumnDef::new(LeaderLeases::Epoch).big_integer().not_null())
                    .col(
                        ColumnDef::new(LeaderLeases::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LeaderLeases::Table).to_owned())
            .await
    }
}
