//! The dead-letter queue and queue statistics (scheduler), in one team.

use axum::Json;
use axum::extract::{Path, Query};
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::scheduler::v1::{
    GetDeadLetterRequest, GetDeadLetterResponse, GetQueueStatsRequest, GetQueueStatsResponse,
    ListDeadLettersRequest, ListDeadLettersResponse, PurgeDeadLettersRequest,
    PurgeDeadLettersResponse, RequeueDeadLetterRequest, RequeueDeadLetterResponse,
};
use godel_types::{TaskId, TeamId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::PageQuery;
use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

/// Filters of a dead-letter listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeadLetterFilter {
    /// Only tasks of this type.
    #[serde(default)]
    task_type: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/dlq",
    tag = "dlq",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), PageQuery, DeadLetterFilter),
    responses(
        (status = 200, description = "Dead-lettered tasks with their errors, oldest first (`godel.scheduler.v1.ListDeadLettersResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_dead_letters(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<DeadLetterFilter>,
) -> Result<Json<ListDeadLettersResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::DlqRead)?;
    let request = ctx.request(ListDeadLettersRequest {
        team_id: team.to_string(),
        page: Some(page.to_pb()),
        task_type: filter.task_type.unwrap_or_default(),
    })?;
    let mut scheduler = ctx.state.clients.scheduler.clone();
    let response = scheduler.list_dead_letters(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/dlq/{task_id}",
    tag = "dlq",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("task_id" = String, Path, description = "`tsk_…`")),
    responses(
        (status = 200, description = "A dead-lettered task and its errors (`godel.scheduler.v1.GetDeadLetterResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_dead_letter(
    ctx: Ctx,
    Path((team_id, task_id)): Path<(String, String)>,
) -> Result<Json<GetDeadLetterResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::DlqRead)?;
    let task: TaskId = parse_path_id("task", &task_id)?;
    let request = ctx.request(GetDeadLetterRequest {
        team_id: team.to_string(),
        task_id: task.to_string(),
    })?;
    let mut scheduler = ctx.state.clients.scheduler.clone();
    let response = scheduler.get_dead_letter(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/dlq/{task_id}/requeue",
    tag = "dlq",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("task_id" = String, Path, description = "`tsk_…`")),
    responses(
        (status = 200, description = "The task, queued again with its attempts counted from zero (`godel.scheduler.v1.RequeueDeadLetterResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn requeue_dead_letter(
    ctx: Ctx,
    Path((team_id, task_id)): Path<(String, String)>,
) -> Result<Json<RequeueDeadLetterResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::DlqManage)?;
    let task: TaskId = parse_path_id("task", &task_id)?;
    let request = ctx.request(RequeueDeadLetterRequest {
        team_id: team.to_string(),
        task_id: task.to_string(),
    })?;
    let mut scheduler = ctx.state.clients.scheduler.clone();
    let response = scheduler.requeue_dead_letter(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// Which dead letters to delete for good.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct Purge {
    /// These only (`tsk_…`); empty or absent means every one matching the other filter.
    #[serde(default)]
    task_ids: Vec<String>,
    /// Only those dead-lettered before this time (RFC 3339).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    dead_lettered_before: Option<chrono::DateTime<chrono::Utc>>,
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/dlq/purge",
    tag = "dlq",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    request_body = Purge,
    responses(
        (status = 200, description = "How many were deleted (`godel.scheduler.v1.PurgeDeadLettersResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn purge_dead_letters(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Body(purge): Body<Purge>,
) -> Result<Json<PurgeDeadLettersResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::DlqManage)?;
    let request = ctx.request(PurgeDeadLettersRequest {
        team_id: team.to_string(),
        task_ids: purge.task_ids,
        dead_lettered_before: purge
            .dead_lettered_before
            .map(godel_proto::convert::to_timestamp),
    })?;
    let mut scheduler = ctx.state.clients.scheduler.clone();
    let response = scheduler.purge_dead_letters(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/queue/stats",
    tag = "dlq",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    responses(
        (status = 200, description = "The team's queue depth per state, the age of its oldest queued task and the orchestrators' capacity (`godel.scheduler.v1.GetQueueStatsResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn queue_stats(
    ctx: Ctx,
    Path(team_id): Path<String>,
) -> Result<Json<GetQueueStatsResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::DlqRead)?;
    let request = ctx.request(GetQueueStatsRequest {
        team_id: team.to_string(),
    })?;
    let mut scheduler = ctx.state.clients.scheduler.clone();
    let response = scheduler.get_queue_stats(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}
