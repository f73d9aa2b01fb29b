//! A team's quotas (auth).

use axum::Json;
use axum::extract::Path;
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::auth::v1::{
    GetQuotasRequest, GetQuotasResponse, Quotas, SetQuotasRequest, SetQuotasResponse,
};
use godel_types::TeamId;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/quotas",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    responses(
        (status = 200, description = "The team's limits; an absent field means the deployment's default (`godel.auth.v1.GetQuotasResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_quotas(
    ctx: Ctx,
    Path(team_id): Path<String>,
) -> Result<Json<GetQuotasResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::QuotasRead)?;
    let request = ctx.request(GetQuotasRequest {
        team_id: team.to_string(),
    })?;
    let response = ctx.state.clients.auth.clone().get_quotas(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// A team's limits, replacing the current ones as a whole: an absent field goes back
/// to the deployment's default.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct NewQuotas {
    /// Most agent sessions running at once.
    #[serde(default)]
    max_concurrent_sessions: Option<u32>,
    /// Most tasks waiting (blocked or queued) at once.
    #[serde(default)]
    max_queued_tasks: Option<u32>,
    /// API requests per minute, overriding the default rate limit.
    #[serde(default)]
    rate_limit_per_minute: Option<u32>,
    /// Monthly model spend, in millionths of a US dollar.
    #[serde(default)]
    monthly_budget_micro_usd: Option<u64>,
}

#[utoipa::path(
    put,
    path = "/v1/teams/{team_id}/quotas",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    request_body = NewQuotas,
    responses(
        (status = 200, description = "The team's limits now (`godel.auth.v1.SetQuotasResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn put_quotas(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Body(quotas): Body<NewQuotas>,
) -> Result<Json<SetQuotasResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::QuotasManage)?;
    let request = ctx.request(SetQuotasRequest {
        quotas: Some(Quotas {
            team_id: team.to_string(),
            max_concurrent_sessions: quotas.max_concurrent_sessions,
            max_queued_tasks: quotas.max_queued_tasks,
            rate_limit_per_minute: quotas.rate_limit_per_minute,
            monthly_budget_micro_usd: quotas.monthly_budget_micro_usd,
        }),
    })?;
    let response = ctx.state.clients.auth.clone().set_quotas(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}
