//! The HTTP endpoints every service serves: `/livez`, `/readyz`, `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::ReadinessCheck;

/// How long one readiness check may take before it counts as failing.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Readiness state shared by `/readyz` and the shutdown sequence.
pub(crate) struct Readiness {
    pub(crate) checks: Vec<Arc<dyn ReadinessCheck>>,
    pub(crate) shutting_down: AtomicBool,
}

impl Readiness {
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Runs every check concurrently; returns the failing ones as `name → reason`.
    async fn failing(&self) -> Map<String, Value> {
        let results = futures::future::join_all(self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (check.name().to_owned(), outcome)
        }))
        .await;
        results
            .into_iter()
            .filter_map(|(name, outcome)| outcome.err().map(|reason| (name, Value::String(reason))))
            .collect()
    }
}

pub(crate) fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

async fn livez() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({ "status": "live" })))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    if readiness.shutting_down.load(Ordering::SeqCst) {
        let body = json!({ "status": "shutting_down", "failing": {} });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let failing = readiness.failing().await;
    if failing.is_empty() {
        (StatusCode::OK, axum::Json(json!({ "status": "ready" }))).into_response()
    } else {
        let body = json!({ "status": "not_ready", "failing": failing });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, godel_telemetry::METRICS_CONTENT_TYPE)],
        godel_telemetry::render_metrics(),
    )
}
