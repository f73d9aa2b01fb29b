//! A team's agent profiles (scheduler): how its tasks are run. Reading them is part
//! of seeing the team (`teams:read`); changing them changes its settings
//! (`teams:manage`).

use axum::Json;
use axum::extract::Path;
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::scheduler::v1::{
    DeleteProfileRequest, ListProfilesRequest, ListProfilesResponse, Profile, PutProfileRequest,
    PutProfileResponse,
};
use godel_types::TeamId;

use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/profiles",
    tag = "profiles",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    responses(
        (status = 200, description = "The team's profiles and the built-in ones it has not replaced, most preferred first (`godel.scheduler.v1.ListProfilesResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_profiles(
    ctx: Ctx,
    Path(team_id): Path<String>,
) -> Result<Json<ListProfilesResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TeamsRead)?;
    let request = ctx.request(ListProfilesRequest {
        team_id: team.to_string(),
    })?;
    let response = ctx
        .state
        .clients
        .scheduler
        .clone()
        .list_profiles(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

#[utoipa::path(
    put,
    path = "/v1/teams/{team_id}/profiles/{name}",
    tag = "profiles",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("name" = String, Path, description = "The profile's name (1-64 of a-z, 0-9, `-`, `_`)")),
    request_body(content = ProtoJson, description = "A `godel.scheduler.v1.Profile` in proto3 JSON (`adapter`, `model`, `taskTypes`, `runtime`, `limits`, `estimatedCostMicroUsd`, `preference`); its name is the path's, `id`, `teamId`, `builtin` and the times are ignored"),
    responses(
        (status = 200, description = "The profile, created or replaced (`godel.scheduler.v1.PutProfileResponse`)", body = ProtoJson),
        (status = 400, description = "An invalid profile", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn put_profile(
    ctx: Ctx,
    Path((team_id, name)): Path<(String, String)>,
    Body(profile): Body<Profile>,
) -> Result<Json<PutProfileResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TeamsManage)?;
    let request = ctx.request(PutProfileRequest {
        team_id: team.to_string(),
        profile: Some(Profile { name, ..profile }),
    })?;
    let response = ctx
        .state
        .clients
        .scheduler
        .clone()
        .put_profile(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

#[utoipa::path(
    delete,
    path = "/v1/teams/{team_id}/profiles/{name}",
    tag = "profiles",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("name" = String, Path, description = "The profile's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "A built-in profile cannot be deleted", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn delete_profile(
    ctx: Ctx,
    Path((team_id, name)): Path<(String, String)>,
) -> Result<http::StatusCode, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TeamsManage)?;
    let request = ctx.request(DeleteProfileRequest {
        team_id: team.to_string(),
        name,
    })?;
    let response = ctx
        .state
        .clients
        .scheduler
        .clone()
        .delete_profile(request)
        .await;
    response.map_err(upstream)?;
    Ok(http::StatusCode::NO_CONTENT)
}
