//! A team's members and roles (auth).

use axum::Json;
use axum::extract::{Path, Query};
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::auth::v1::{
    AddMemberRequest, AddMemberResponse, CreateRoleRequest, CreateRoleResponse, ListMembersRequest,
    ListMembersResponse, ListRolesRequest, ListRolesResponse, RemoveMemberRequest,
};
use godel_types::{TeamId, UserId};
use serde::Deserialize;
use utoipa::ToSchema;

use super::PageQuery;
use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/members",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), PageQuery),
    responses(
        (status = 200, description = "The team's members and their roles (`godel.auth.v1.ListMembersResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_members(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<ListMembersResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TeamsRead)?;
    let request = ctx.request(ListMembersRequest {
        team_id: team.to_string(),
        page: Some(page.to_pb()),
    })?;
    let response = ctx.state.clients.auth.clone().list_members(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// A user to add to the team, or whose roles there to replace.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewMember {
    /// `usr_…`
    user_id: String,
    /// Built-in team roles (`team-admin`, `developer`, `viewer`, `auditor`) or the
    /// team's custom roles; at least one.
    roles: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/members",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    request_body = NewMember,
    responses(
        (status = 200, description = "The membership (`godel.auth.v1.AddMemberResponse`)", body = ProtoJson),
        (status = 400, description = "An unknown role or user id", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn add_member(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Body(member): Body<NewMember>,
) -> Result<Json<AddMemberResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::MembersManage)?;
    let user: UserId = godel_proto::convert::parse_id("user_id", &member.user_id)?;
    let request = ctx.request(AddMemberRequest {
        team_id: team.to_string(),
        user_id: user.to_string(),
        roles: member.roles,
    })?;
    let response = ctx.state.clients.auth.clone().add_member(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

#[utoipa::path(
    delete,
    path = "/v1/teams/{team_id}/members/{user_id}",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("user_id" = String, Path, description = "`usr_…`")),
    responses(
        (status = 204, description = "The user is no longer a member"),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn remove_member(
    ctx: Ctx,
    Path((team_id, user_id)): Path<(String, String)>,
) -> Result<http::StatusCode, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::MembersManage)?;
    let user: UserId = parse_path_id("user", &user_id)?;
    let request = ctx.request(RemoveMemberRequest {
        team_id: team.to_string(),
        user_id: user.to_string(),
    })?;
    let response = ctx.state.clients.auth.clone().remove_member(request).await;
    response.map_err(upstream)?;
    Ok(http::StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/roles",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    responses(
        (status = 200, description = "The built-in roles and the team's own (`godel.auth.v1.ListRolesResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_roles(
    ctx: Ctx,
    Path(team_id): Path<String>,
) -> Result<Json<ListRolesResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TeamsRead)?;
    let request = ctx.request(ListRolesRequest {
        team_id: team.to_string(),
    })?;
    let response = ctx.state.clients.auth.clone().list_roles(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// A custom role of the team.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewRole {
    /// Unique within the team and among the built-in roles.
    name: String,
    /// Permission names from the catalog (`tasks:create`, …; see docs/permissions.md).
    permissions: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/roles",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    request_body = NewRole,
    responses(
        (status = 201, description = "The new role (`godel.auth.v1.CreateRoleResponse`)", body = ProtoJson),
        (status = 400, description = "A permission not in the catalog", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Already exists", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create_role(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Body(role): Body<NewRole>,
) -> Result<(http::StatusCode, Json<CreateRoleResponse>), Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::RolesManage)?;
    let request = ctx.request(CreateRoleRequest {
        team_id: team.to_string(),
        name: role.name,
        permissions: role.permissions,
    })?;
    let response = ctx.state.clients.auth.clone().create_role(request).await;
    Ok((
        http::StatusCode::CREATED,
        Json(response.map_err(upstream)?.into_inner()),
    ))
}
