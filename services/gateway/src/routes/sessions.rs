//! Agent sessions (orchestrator): list, get, stop — in one team.

use axum::Json;
use axum::extract::{Path, Query};
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::orchestrator::v1::{
    GetSessionRequest, GetSessionResponse, ListSessionsRequest, ListSessionsResponse,
    StopSessionRequest, StopSessionResponse,
};
use godel_types::{SessionId, TaskId, TeamId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::PageQuery;
use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

/// Filters of a session listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SessionFilter {
    /// Only sessions of this task (`tsk_…`).
    #[serde(default)]
    task_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/sessions",
    tag = "sessions",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), PageQuery, SessionFilter),
    responses(
        (status = 200, description = "Sessions, newest first (`godel.orchestrator.v1.ListSessionsResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_sessions(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<SessionFilter>,
) -> Result<Json<ListSessionsResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::SessionsRead)?;
    let task_id = match filter.task_id.as_deref() {
        None | Some("") => String::new(),
        Some(task) => godel_proto::convert::parse_id::<TaskId>("task_id", task)?.to_string(),
    };
    let request = ctx.request(ListSessionsRequest {
        team_id: team.to_string(),
        page: Some(page.to_pb()),
        states: Vec::new(),
        task_id,
    })?;
    let response = ctx
        .state
        .clients
        .orchestrator
        .clone()
        .list_sessions(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/sessions/{session_id}",
    tag = "sessions",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("session_id" = String, Path, description = "`ses_…`")),
    responses(
        (status = 200, description = "The session (`godel.orchestrator.v1.GetSessionResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_session(
    ctx: Ctx,
    Path((team_id, session_id)): Path<(String, String)>,
) -> Result<Json<GetSessionResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::SessionsRead)?;
    let session: SessionId = parse_path_id("session", &session_id)?;
    let request = ctx.request(GetSessionRequest {
        team_id: team.to_string(),
        session_id: session.to_string(),
    })?;
    let response = ctx
        .state
        .clients
        .orchestrator
        .clone()
        .get_session(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// How to stop a session.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct StopSession {
    /// For the record.
    #[serde(default)]
    reason: String,
    /// Kill at once instead of asking the agent to stop.
    #[serde(default)]
    force: bool,
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/sessions/{session_id}/stop",
    tag = "sessions",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("session_id" = String, Path, description = "`ses_…`")),
    request_body = StopSession,
    responses(
        (status = 200, description = "The session (`godel.orchestrator.v1.StopSessionResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn stop_session(
    ctx: Ctx,
    Path((team_id, session_id)): Path<(String, String)>,
    Body(stop): Body<StopSession>,
) -> Result<Json<StopSessionResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::SessionsStop)?;
    let session: SessionId = parse_path_id("session", &session_id)?;
    let request = ctx.request(StopSessionRequest {
        team_id: team.to_string(),
        session_id: session.to_string(),
        reason: stop.reason,
        force: stop.force,
    })?;
    let response = ctx
        .state
        .clients
        .orchestrator
        .clone()
        .stop_session(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}
