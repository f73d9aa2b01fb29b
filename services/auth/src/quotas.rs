//! Per-team quotas: stored here, read by the scheduler (concurrency, queue depth),
//! the gateway (rate limit) and the LLM proxy (budget). An unset value means the
//! deployment's default.

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_proto::events::v1::IamChange;
use godel_store::sea_orm::{ActiveModelTrait, ActiveValue, EntityTrait};
use godel_types::TeamId;

use crate::directory::find_team;
use crate::entity::quota;
use crate::store::{Auth, Principal, db_error, enqueue, iam_event, now};

/// A team's limits; `None` is the deployment's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Most agent sessions running at once.
    pub max_concurrent_sessions: Option<u32>,
    /// Most tasks waiting (blocked or queued) at once.
    pub max_queued_tasks: Option<u32>,
    /// API requests per minute, overriding the default rate limit.
    pub rate_limit_per_minute: Option<u32>,
    /// Monthly model spend, in millionths of a US dollar (at most `i64::MAX`).
    pub monthly_budget_micro_usd: Option<u64>,
}

/// A team's quotas and when they were last set (`None`: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeamQuotas {
    pub team: TeamId,
    pub quotas: Quotas,
    pub updated_at: Option<DateTime<Utc>>,
}

fn to_u32(v: Option<i64>, what: &str) -> Result<Option<u32>, Error> {
    v.map(|v| {
        u32::try_from(v).map_err(|_| {
            tracing::error!(column = what, value = v, "stored quota out of range");
            Error::internal("a stored quota is unreadable")
        })
    })
    .transpose()
}

fn from_row(row: quota::Model) -> Result<TeamQuotas, Error> {
    Ok(TeamQuotas {
        team: TeamId::from_uuid(row.team_id),
        quotas: Quotas {
            max_concurrent_sessions: to_u32(
                row.max_concurrent_sessions,
                "max_concurrent_sessions",
            )?,
            max_queued_tasks: to_u32(row.max_queued_tasks, "max_queued_tasks")?,
            rate_limit_per_minute: to_u32(row.rate_limit_per_minute, "rate_limit_per_minute")?,
            monthly_budget_micro_usd: row
                .monthly_budget_micro_usd
                .map(|v| v.max(0).unsigned_abs()),
        },
        updated_at: Some(row.updated_at),
    })
}

impl Auth {
    /// `team`'s quotas (all defaults when never set).
    pub async fn get_quotas(&self, team: TeamId) -> Result<TeamQuotas, Error> {
        find_team(self.db.conn(), team).await?;
        let row = quota::Entity::find_by_id(team.as_uuid())
            .one(self.db.conn())
            .await
            .map_err(db_error("reading quotas"))?;
        match row {
            Some(row) => from_row(row),
            None => Ok(TeamQuotas {
                team,
                quotas: Quotas::default(),
                updated_at: None,
            }),
        }
    }

    /// Replaces `team`'s quotas as a whole (unset values go back to the default).
    pub async fn set_quotas(
        &self,
        actor: Principal,
        team: TeamId,
        quotas: Quotas,
    ) -> Result<TeamQuotas, Error> {
        let budget = quotas
            .monthly_budget_micro_usd
            .map(i64::try_from)
            .transpose()
            .map_err(|_| {
                Error::invalid_argument(
                    "monthly_budget_micro_usd",
                    "the budget must be at most 9223372036854775807",
                )
            })?;
        self.write(move |txn| {
            Box::pin(async move {
                find_team(txn, team).await?;
                let at = now();
                let active = quota::ActiveModel {
                    team_id: ActiveValue::Set(team.as_uuid()),
                    max_concurrent_sessions: ActiveValue::Set(
                        quotas.max_concurrent_sessions.map(i64::from),
                    ),
                    max_queued_tasks: ActiveValue::Set(quotas.max_queued_tasks.map(i64::from)),
                    rate_limit_per_minute: ActiveValue::Set(
                        quotas.rate_limit_per_minute.map(i64::from),
                    ),
                    monthly_budget_micro_usd: ActiveValue::Set(budget),
                    updated_at: ActiveValue::Set(at),
                };
                let exists = quota::Entity::find_by_id(team.as_uuid())
                    .one(txn)
                    .await
                    .map_err(db_error("reading quotas"))?
                    .is_some();
                let row = if exists {
                    active.update(txn).await
                } else {
                    active.insert(txn).await
                }
                .map_err(db_error("writing quotas"))?;
                let event = iam_event(
                    team,
                    IamChange::QuotasChanged,
                    actor,
                    team.to_string(),
                    Vec::new(),
                    at,
                )?;
                enqueue(txn, &[event]).await?;
                from_row(row)
            })
        })
        .await
    }
}
