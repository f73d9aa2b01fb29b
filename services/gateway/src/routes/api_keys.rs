//! A team's API keys (auth): list, create (the secret is in that response only),
//! revoke.

use axum::Json;
use axum::extract::{Path, Query};
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::auth::v1::{
    CreateApiKeyRequest, CreateApiKeyResponse, ListApiKeysRequest, ListApiKeysResponse,
    RevokeApiKeyRequest, RevokeApiKeyResponse,
};
use godel_types::{ApiKeyId, TeamId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::PageQuery;
use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

/// Filters of an API key listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyFilter {
    /// Also list revoked keys.
    #[serde(default)]
    include_revoked: bool,
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/api-keys",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), PageQuery, KeyFilter),
    responses(
        (status = 200, description = "The team's API keys, without secrets (`godel.auth.v1.ListApiKeysResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_api_keys(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<KeyFilter>,
) -> Result<Json<ListApiKeysResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::KeysManage)?;
    let request = ctx.request(ListApiKeysRequest {
        team_id: team.to_string(),
        page: Some(page.to_pb()),
        include_revoked: filter.include_revoked,
    })?;
    let response = ctx.state.clients.auth.clone().list_api_keys(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// An API key to create.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewApiKey {
    /// A name for people.
    name: String,
    /// Permission names; the caller cannot grant permissions it does not hold.
    #[serde(default)]
    permissions: Vec<String>,
    /// When the key stops working (RFC 3339); absent: never.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/api-keys",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    request_body = NewApiKey,
    responses(
        (status = 201, description = "The key and its `secret`, shown this once: only a hash of it is stored (`godel.auth.v1.CreateApiKeyResponse`)", body = ProtoJson),
        (status = 400, description = "A permission not in the catalog", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the permission in this team, or a permission it grants", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create_api_key(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Body(key): Body<NewApiKey>,
) -> Result<(http::StatusCode, Json<CreateApiKeyResponse>), Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::KeysManage)?;
    let request = ctx.request(CreateApiKeyRequest {
        team_id: team.to_string(),
        name: key.name,
        permissions: key.permissions,
        expires_at: key.expires_at.map(godel_proto::convert::to_timestamp),
        ..Default::default()
    })?;
    let response = ctx.state.clients.auth.clone().create_api_key(request).await;
    Ok((
        http::StatusCode::CREATED,
        Json(response.map_err(upstream)?.into_inner()),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/teams/{team_id}/api-keys/{key_id}",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("key_id" = String, Path, description = "`key_…`")),
    responses(
        (status = 200, description = "The revoked key (`godel.auth.v1.RevokeApiKeyResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn revoke_api_key(
    ctx: Ctx,
    Path((team_id, key_id)): Path<(String, String)>,
) -> Result<Json<RevokeApiKeyResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::KeysManage)?;
    let key: ApiKeyId = parse_path_id("API key", &key_id)?;
    let request = ctx.request(RevokeApiKeyRequest {
        team_id: team.to_string(),
        key_id: key.to_string(),
    })?;
    let response = ctx.state.clients.auth.clone().revoke_api_key(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}
