//! Audit records (audit service): a team's records, newest first.

use axum::Json;
use axum::extract::{Path, Query};
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::audit::v1::{AuditFilter, QueryRequest, QueryResponse};
use godel_types::TeamId;
use serde::Deserialize;
use utoipa::IntoParams;

use super::PageQuery;
use crate::call::{Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

/// Filters of an audit query; absent fields match everything.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RecordFilter {
    /// Exact action, or a prefix ending in `.` (`task.`).
    #[serde(default)]
    action: Option<String>,
    /// The actor's id (`usr_…`, `key_…`).
    #[serde(default)]
    actor_id: Option<String>,
    /// An id or path.
    #[serde(default)]
    resource: Option<String>,
    /// W3C trace id (32 hex characters).
    #[serde(default)]
    trace_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/audit/records",
    tag = "audit",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), PageQuery, RecordFilter),
    responses(
        (status = 200, description = "Records, newest first (`godel.audit.v1.QueryResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn query_audit_records(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<RecordFilter>,
) -> Result<Json<QueryResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::AuditRead)?;
    let request = ctx.request(QueryRequest {
        filter: Some(AuditFilter {
            team_id: team.to_string(),
            actor_id: filter.actor_id.unwrap_or_default(),
            action: filter.action.unwrap_or_default(),
            resource: filter.resource.unwrap_or_default(),
            trace_id: filter.trace_id.unwrap_or_default(),
            ..Default::default()
        }),
        page: Some(page.to_pb()),
    })?;
    let response = ctx.state.clients.audit.clone().query(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}
