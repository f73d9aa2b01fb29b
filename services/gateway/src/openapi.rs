//! The OpenAPI 3.1 document of the REST API, generated from the route annotations
//! (utoipa) and served at `/v1/openapi.json`; `crate::docs` serves it as an
//! interactive page at `/v1/docs`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// An RFC 9457 problem document (`application/problem+json`), as every error is sent.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemDoc {
    /// `urn:godel:problem:<code>`.
    #[serde(rename = "type")]
    type_: String,
    title: String,
    status: u16,
    detail: String,
    instance: Option<String>,
    /// The stable error code (`not_found`, `permission_denied`, `resource_exhausted` …).
    code: String,
    /// The input field that is wrong.
    field: Option<String>,
    /// Seconds to wait before retrying (also the `Retry-After` header).
    retry_after_seconds: Option<u64>,
}

/// A response message of an internal service's API in its proto3 JSON form; the
/// operation's description names the message (see `proto/godel/`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProtoJson, value_type = Object)]
pub(crate) struct ProtoJson(serde_json::Map<String, serde_json::Value>);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Godel API",
        description = "Godel's public REST API. Every `/v1` route except this document \
                       needs `Authorization: Bearer <access token or API key>`; errors are \
                       RFC 9457 problem documents; responses carry `RateLimit-*` headers.",
    ),
    paths(openapi_json),
    components(schemas(ProblemDoc, ProtoJson)),
    modifiers(&BearerAuth),
    tags(
        (name = "identity", description = "The caller"),
        (name = "teams", description = "Teams (auth service)"),
        (name = "tasks", description = "Tasks (scheduler)"),
        (name = "sessions", description = "Agent sessions (orchestrator)"),
        (name = "audit", description = "Audit records (audit service)"),
        (name = "dlq", description = "The dead-letter queue and queue statistics (scheduler)"),
        (name = "profiles", description = "Agent profiles: how a team's tasks are run (scheduler)"),
        (name = "plans", description = "Plans (scheduler)"),
        (name = "meta", description = "This document"),
    )
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A Godel access token (JWT) or an API key (`gdl_…`)"))
                    .build(),
            ),
        );
    }
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json(
    State(doc): State<std::sync::Arc<serde_json::Value>>,
) -> Json<serde_json::Value> {
    Json(doc.as_ref().clone())
}
