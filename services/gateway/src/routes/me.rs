//! `GET /v1/me`: who the credential stands for.

use axum::Json;
use godel_error::Error;
use serde::Serialize;
use utoipa::ToSchema;

use crate::call::Ctx;

/// The authenticated caller.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Me {
    /// `usr_…` or `key_…`.
    principal: String,
    /// `user` or `api_key`.
    kind: &'static str,
    /// The team the caller acts in (`team_…`), if any.
    team_id: Option<String>,
    /// Permission names held in that team.
    permissions: Vec<String>,
    /// Organisation roles (`org-admin`, `org-auditor`, `audit-writer`).
    org_roles: Vec<String>,
    /// When the access token expires (RFC 3339).
    expires_at: String,
}

#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "identity",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No valid credential", body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_me(ctx: Ctx) -> Result<Json<Me>, Error> {
    let caller = ctx.caller();
    Ok(Json(Me {
        principal: caller.principal.to_string(),
        kind: match caller.principal.kind() {
            godel_identity::PrincipalKind::User => "user",
            godel_identity::PrincipalKind::ApiKey => "api_key",
        },
        team_id: caller.team.map(|t| t.to_string()),
        permissions: caller
            .permissions
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        org_roles: caller.org_roles.iter().map(ToString::to_string).collect(),
        expires_at: caller.expires_at.to_rfc3339(),
    }))
}
