//! Teams (auth): list the caller's teams, read one, create one (org-admin).

use axum::Json;
use axum::extract::{Path, Query};
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::auth::v1::{
    CreateTeamRequest, CreateTeamResponse, GetTeamRequest, GetTeamResponse, ListTeamsRequest,
    ListTeamsResponse,
};
use godel_types::TeamId;
use serde::Deserialize;
use utoipa::ToSchema;

use super::PageQuery;
use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

#[utoipa::path(
    get,
    path = "/v1/teams",
    tag = "teams",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "The teams the caller may act in (`godel.auth.v1.ListTeamsResponse`)", body = ProtoJson),
        (status = 401, description = "No valid credential", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_teams(
    ctx: Ctx,
    Query(page): Query<PageQuery>,
) -> Result<Json<ListTeamsResponse>, Error> {
    let request = ctx.request(ListTeamsRequest {
        page: Some(page.to_pb()),
    })?;
    let response = ctx.state.clients.auth.clone().list_teams(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// A team to create.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewTeam {
    /// A unique, URL-safe name (for example `core-infra`).
    name: String,
    /// A name for people.
    #[serde(default)]
    display_name: String,
}

#[utoipa::path(
    post,
    path = "/v1/teams",
    tag = "teams",
    security(("bearer" = [])),
    request_body = NewTeam,
    responses(
        (status = 201, description = "The new team (`godel.auth.v1.CreateTeamResponse`)", body = ProtoJson),
        (status = 403, description = "Not an org-admin", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Already exists", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create_team(
    ctx: Ctx,
    Body(team): Body<NewTeam>,
) -> Result<(http::StatusCode, Json<CreateTeamResponse>), Error> {
    ctx.caller()
        .require_org_role(godel_identity::OrgRole::Admin, "creating a team")?;
    let request = ctx.request(CreateTeamRequest {
        name: team.name,
        display_name: team.display_name,
    })?;
    let response = ctx.state.clients.auth.clone().create_team(request).await;
    Ok((
        http::StatusCode::CREATED,
        Json(response.map_err(upstream)?.into_inner()),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    responses(
        (status = 200, description = "The team (`godel.auth.v1.GetTeamResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_team(
    ctx: Ctx,
    Path(team_id): Path<String>,
) -> Result<Json<GetTeamResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TeamsRead)?;
    let request = ctx.request(GetTeamRequest {
        team_id: team.to_string(),
    })?;
    let response = ctx.state.clients.auth.clone().get_team(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}
