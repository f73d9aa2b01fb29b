//! A team's model-provider keys (the orchestrator's `ProviderKeyService`): list their
//! metadata, store one, rotate one. The secret goes in and is never returned.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::orchestrator::v1::{
    ListProviderKeysRequest, ListProviderKeysResponse, RotateProviderKeyRequest,
    RotateProviderKeyResponse, SetProviderKeyRequest, SetProviderKeyResponse,
};
use godel_types::TeamId;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/provider-keys",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    responses(
        (status = 200, description = "The team's provider keys, metadata only (`godel.orchestrator.v1.ListProviderKeysResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_provider_keys(
    ctx: Ctx,
    Path(team_id): Path<String>,
) -> Result<Json<ListProviderKeysResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::ProviderKeysManage)?;
    let request = ctx.request(ListProviderKeysRequest {
        team_id: team.to_string(),
    })?;
    let response = ctx
        .state
        .clients
        .provider_keys
        .clone()
        .list_provider_keys(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// A provider key to store.
#[derive(Deserialize, ToSchema)]
pub(crate) struct NewProviderKey {
    /// `openai` or `anthropic` (the orchestrator's `proxy.providers`).
    provider: String,
    /// Which of the team's keys for this provider; absent: `default`.
    #[serde(default)]
    name: Option<String>,
    /// The key itself: stored encrypted, never logged or returned.
    secret: String,
}

// Not derived: the secret must never reach a log line.
impl std::fmt::Debug for NewProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewProviderKey")
            .field("provider", &self.provider)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/provider-keys",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    request_body = NewProviderKey,
    responses(
        (status = 201, description = "The stored key's metadata (`godel.orchestrator.v1.SetProviderKeyResponse`)", body = ProtoJson),
        (status = 400, description = "An empty provider, name or secret", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The team already has a key of that provider and name: rotate it", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn set_provider_key(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Body(key): Body<NewProviderKey>,
) -> Result<(StatusCode, Json<SetProviderKeyResponse>), Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::ProviderKeysManage)?;
    let request = ctx.request(SetProviderKeyRequest {
        team_id: team.to_string(),
        provider: key.provider,
        name: key.name.unwrap_or_default(),
        secret: key.secret,
    })?;
    let response = ctx
        .state
        .clients
        .provider_keys
        .clone()
        .set_provider_key(request)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(response.map_err(upstream)?.into_inner()),
    ))
}

/// A provider key's new secret.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RotatedSecret {
    /// The new key: stored encrypted, never logged or returned.
    secret: String,
}

impl std::fmt::Debug for RotatedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedSecret").finish_non_exhaustive()
    }
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/provider-keys/{provider_key_id}/rotate",
    tag = "teams",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("provider_key_id" = String, Path, description = "`sec_…`")),
    request_body = RotatedSecret,
    responses(
        (status = 200, description = "The key's metadata with its new version; sessions started from now on use the new secret (`godel.orchestrator.v1.RotateProviderKeyResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn rotate_provider_key(
    ctx: Ctx,
    Path((team_id, key_id)): Path<(String, String)>,
    Body(rotated): Body<RotatedSecret>,
) -> Result<Json<RotateProviderKeyResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::ProviderKeysManage)?;
    let request = ctx.request(RotateProviderKeyRequest {
        team_id: team.to_string(),
        key_id,
        secret: rotated.secret,
    })?;
    let response = ctx
        .state
        .clients
        .provider_keys
        .clone()
        .rotate_provider_key(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}
