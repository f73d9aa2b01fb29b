//! Plans (scheduler, with the orchestrator's integration branch): submit a reviewed
//! plan, list, get with its tasks and integration, cancel, roll back — in one team.

use axum::Json;
use axum::extract::{Path, Query};
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::orchestrator::v1::{
    GetPlanIntegrationRequest, GetPlanIntegrationResponse, RollbackPlanRequest,
    RollbackPlanResponse,
};
use godel_proto::scheduler::v1::{
    CancelPlanRequest, CancelPlanResponse, GetPlanRequest, IntentPlan, ListPlansRequest,
    ListPlansResponse, Plan, PlanTask, SubmitIntentPlanRequest, SubmitPlanResponse,
};
use godel_types::{PlanId, TeamId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::PageQuery;
use super::intents::{Gate, Repository};
use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

/// A reviewed plan to submit, as `POST …/intents` with `dry_run` returned it
/// (possibly edited).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewPlan {
    /// The intent's text, for the record.
    #[serde(default)]
    text: String,
    /// Where the tasks work (`url`, `ref`, `commit` — the 40-hex base commit).
    repository: Repository,
    /// The quality gate; absent: the repository's own (`godel.toml`), if any.
    #[serde(default)]
    gate: Option<Gate>,
    /// The plan (`godel.scheduler.v1.IntentPlan`: `summary`, `nodes` of `key`,
    /// `taskType`, `profile`, `prompt`, `dependsOn`); checked again before it runs.
    #[schema(value_type = Object)]
    plan: IntentPlan,
    /// Deduplicates submissions within the team.
    #[serde(default)]
    idempotency_key: String,
}

fn plan_id(text: &str) -> Result<PlanId, Error> {
    parse_path_id("plan", text)
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/plans",
    tag = "plans",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    request_body = NewPlan,
    responses(
        (status = 201, description = "The plan and its tasks (`godel.scheduler.v1.SubmitPlanResponse`; `created` is false for an idempotent repeat)", body = ProtoJson),
        (status = 400, description = "Invalid input, or an invalid plan (every problem listed)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn submit_plan(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Body(plan): Body<NewPlan>,
) -> Result<(http::StatusCode, Json<SubmitPlanResponse>), Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::PlansCreate)?;
    let request = ctx.request(SubmitIntentPlanRequest {
        team_id: team.to_string(),
        text: plan.text,
        repository: Some(plan.repository.to_pb()),
        gate: plan.gate.as_ref().map(Gate::to_pb),
        plan: Some(plan.plan),
        idempotency_key: plan.idempotency_key,
    })?;
    let response = ctx
        .state
        .clients
        .scheduler
        .clone()
        .submit_intent_plan(request)
        .await
        .map_err(upstream)?
        .into_inner();
    let status = if response.created {
        http::StatusCode::CREATED
    } else {
        http::StatusCode::OK
    };
    Ok((status, Json(response)))
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/plans",
    tag = "plans",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), PageQuery),
    responses(
        (status = 200, description = "Plans, newest first (`godel.scheduler.v1.ListPlansResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_plans(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<ListPlansResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::PlansRead)?;
    let request = ctx.request(ListPlansRequest {
        team_id: team.to_string(),
        page: Some(page.to_pb()),
    })?;
    let response = ctx
        .state
        .clients
        .scheduler
        .clone()
        .list_plans(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// A plan, its tasks and its integration branch.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PlanView {
    /// `godel.scheduler.v1.Plan`.
    plan: Option<Plan>,
    /// Its tasks with states and dependencies (`godel.scheduler.v1.PlanTask`), in
    /// submission order.
    tasks: Vec<PlanTask>,
    /// The integration branch (`godel.orchestrator.v1.GetPlanIntegrationResponse`);
    /// null until an orchestrator has one for the plan.
    integration: Option<GetPlanIntegrationResponse>,
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/plans/{plan_id}",
    tag = "plans",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("plan_id" = String, Path, description = "`pln_…`")),
    responses(
        (status = 200, description = "`{\"plan\": godel.scheduler.v1.Plan, \"tasks\": [godel.scheduler.v1.PlanTask], \"integration\": godel.orchestrator.v1.GetPlanIntegrationResponse | null}`", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_plan(
    ctx: Ctx,
    Path((team_id, plan)): Path<(String, String)>,
) -> Result<Json<PlanView>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::PlansRead)?;
    let plan = plan_id(&plan)?;
    let request = ctx.request(GetPlanRequest {
        team_id: team.to_string(),
        plan_id: plan.to_string(),
    })?;
    let detail = ctx
        .state
        .clients
        .scheduler
        .clone()
        .get_plan(request)
        .await
        .map_err(upstream)?
        .into_inner();
    let request = ctx.request(GetPlanIntegrationRequest {
        team_id: team.to_string(),
        plan_id: plan.to_string(),
    })?;
    let integration = match ctx
        .state
        .clients
        .orchestrator
        .clone()
        .get_plan_integration(request)
        .await
    {
        Ok(response) => Some(response.into_inner()),
        // No integration branch (yet), or an orchestrator that keeps none.
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::Unimplemented
            ) =>
        {
            None
        }
        Err(status) => return Err(upstream(status)),
    };
    Ok(Json(PlanView {
        plan: detail.plan,
        tasks: detail.tasks,
        integration,
    }))
}

/// Why a plan is cancelled or rolled back.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct Reason {
    /// For the record.
    #[serde(default)]
    reason: String,
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/plans/{plan_id}/cancel",
    tag = "plans",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("plan_id" = String, Path, description = "`pln_…`")),
    request_body = Reason,
    responses(
        (status = 200, description = "The plan, its unfinished tasks cancelled (`godel.scheduler.v1.CancelPlanResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cancel_plan(
    ctx: Ctx,
    Path((team_id, plan)): Path<(String, String)>,
    Body(reason): Body<Reason>,
) -> Result<Json<CancelPlanResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::PlansCancel)?;
    let plan = plan_id(&plan)?;
    let request = ctx.request(CancelPlanRequest {
        team_id: team.to_string(),
        plan_id: plan.to_string(),
        reason: reason.reason,
    })?;
    let response = ctx
        .state
        .clients
        .scheduler
        .clone()
        .cancel_plan(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/plans/{plan_id}/rollback",
    tag = "plans",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("plan_id" = String, Path, description = "`pln_…`")),
    request_body = Reason,
    responses(
        (status = 200, description = "The plan's tasks cancelled and its integration branch reset to its base commit (`godel.orchestrator.v1.RollbackPlanResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn rollback_plan(
    ctx: Ctx,
    Path((team_id, plan)): Path<(String, String)>,
    Body(reason): Body<Reason>,
) -> Result<Json<RollbackPlanResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::PlansCancel)?;
    let plan = plan_id(&plan)?;
    let request = ctx.request(RollbackPlanRequest {
        team_id: team.to_string(),
        plan_id: plan.to_string(),
        reason: reason.reason,
    })?;
    let response = ctx
        .state
        .clients
        .orchestrator
        .clone()
        .rollback_plan(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}
