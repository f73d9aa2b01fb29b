//! The REST routes under `/v1`, each documented for the OpenAPI document, and the
//! audit action each one is recorded as.

mod audit;
mod me;
mod sessions;
mod tasks;
mod teams;

use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The audit action of every route: (method, path template, action).
pub(crate) const ACTIONS: &[(&str, &str, &str)] = &[
    ("GET", "/v1/me", "me.get"),
    ("GET", "/v1/teams", "team.list"),
    ("POST", "/v1/teams", "team.create"),
    ("GET", "/v1/teams/{team_id}", "team.get"),
    ("POST", "/v1/teams/{team_id}/tasks", "task.submit"),
    ("GET", "/v1/teams/{team_id}/tasks", "task.list"),
    ("GET", "/v1/teams/{team_id}/tasks/{task_id}", "task.get"),
    (
        "POST",
        "/v1/teams/{team_id}/tasks/{task_id}/cancel",
        "task.cancel",
    ),
    ("GET", "/v1/teams/{team_id}/sessions", "session.list"),
    (
        "GET",
        "/v1/teams/{team_id}/sessions/{session_id}",
        "session.get",
    ),
    (
        "POST",
        "/v1/teams/{team_id}/sessions/{session_id}/stop",
        "session.stop",
    ),
    (
        "GET",
        "/v1/teams/{team_id}/audit/records",
        "audit_record.query",
    ),
];

/// Every authenticated route with its OpenAPI operation.
pub(crate) fn authenticated() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me::get_me))
        .routes(routes!(teams::list_teams, teams::create_team))
        .routes(routes!(teams::get_team))
        .routes(routes!(tasks::submit_task, tasks::list_tasks))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::cancel_task))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::get_session))
        .routes(routes!(sessions::stop_session))
        .routes(routes!(audit::query_audit_records))
}

/// Where a list continues (`godel.common.v1.PageRequest`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Most items to return; 0 or absent means the service's default.
    #[serde(default)]
    pub(crate) page_size: Option<u32>,
    /// The `next_page_token` of the previous page.
    #[serde(default)]
    pub(crate) page_token: Option<String>,
}

impl PageQuery {
    pub(crate) fn to_pb(&self) -> godel_proto::common::v1::PageRequest {
        godel_proto::common::v1::PageRequest {
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
        }
    }
}
