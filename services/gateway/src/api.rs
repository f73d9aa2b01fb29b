//! The REST API router: [`crate::pipeline`] around [`crate::routes`], the OpenAPI
//! document, and problem+json for unknown routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::openapi::{ApiDoc, openapi_json};
use crate::pipeline::{edge, guard, status_problem};
use crate::state::AppState;

/// The OpenAPI document of every route the REST API serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

fn parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::routes::authenticated())
        .split_for_parts()
}

/// The router of the public API.
pub(crate) fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (authenticated, doc) = parts();
    let doc = Arc::new(serde_json::to_value(&doc).unwrap_or_default());
    let login = state.login.clone();
    let authenticated = authenticated
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    let mut public = Router::new()
        .route("/v1/openapi.json", get(openapi_json))
        .with_state(doc)
        .merge(crate::docs::router());
    if let Some(login) = login {
        public = public.merge(crate::login::router(login));
    }
    authenticated
        .merge(public)
        .fallback(|uri: http::Uri| async move {
            status_problem(
                http::StatusCode::NOT_FOUND,
                format!("no route for `{}`", uri.path()),
                uri.path(),
            )
            .into_response()
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(edge))
}
