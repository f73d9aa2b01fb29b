//! The REST routes under `/v1`, each documented for the OpenAPI document, and the
//! audit action each one is recorded as.

mod api_keys;
mod audit;
mod dlq;
mod events;
mod intents;
mod me;
mod members;
mod plans;
mod profiles;
mod provider_keys;
mod quotas;
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
    ("POST", "/v1/teams/{team_id}/intents", "intent.submit"),
    ("POST", "/v1/teams/{team_id}/plans", "plan.submit"),
    ("GET", "/v1/teams/{team_id}/plans", "plan.list"),
    ("GET", "/v1/teams/{team_id}/plans/{plan_id}", "plan.get"),
    (
        "POST",
        "/v1/teams/{team_id}/plans/{plan_id}/cancel",
        "plan.cancel",
    ),
    (
        "POST",
        "/v1/teams/{team_id}/plans/{plan_id}/rollback",
        "plan.rollback",
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
    // Event streams (server-sent events).
    (
        "GET",
        "/v1/teams/{team_id}/sessions/{session_id}/events",
        "session.events",
    ),
    (
        "GET",
        "/v1/teams/{team_id}/tasks/{task_id}/events",
        "task.events",
    ),
    (
        "GET",
        "/v1/teams/{team_id}/plans/{plan_id}/events",
        "plan.events",
    ),
    // Dead-letter queue and queue statistics.
    ("GET", "/v1/teams/{team_id}/dlq", "dead_letter.list"),
    (
        "GET",
        "/v1/teams/{team_id}/dlq/{task_id}",
        "dead_letter.get",
    ),
    (
        "POST",
        "/v1/teams/{team_id}/dlq/{task_id}/requeue",
        "dead_letter.requeue",
    ),
    ("POST", "/v1/teams/{team_id}/dlq/purge", "dead_letter.purge"),
    ("GET", "/v1/teams/{team_id}/queue/stats", "queue.stats"),
    // Members, roles, API keys, quotas, profiles.
    ("GET", "/v1/teams/{team_id}/members", "member.list"),
    ("POST", "/v1/teams/{team_id}/members", "member.add"),
    (
        "DELETE",
        "/v1/teams/{team_id}/members/{user_id}",
        "member.remove",
    ),
    ("GET", "/v1/teams/{team_id}/roles", "role.list"),
    ("POST", "/v1/teams/{team_id}/roles", "role.create"),
    ("GET", "/v1/teams/{team_id}/api-keys", "api_key.list"),
    ("POST", "/v1/teams/{team_id}/api-keys", "api_key.create"),
    (
        "DELETE",
        "/v1/teams/{team_id}/api-keys/{key_id}",
        "api_key.revoke",
    ),
    (
        "GET",
        "/v1/teams/{team_id}/provider-keys",
        "provider_key.list",
    ),
    (
        "POST",
        "/v1/teams/{team_id}/provider-keys",
        "provider_key.set",
    ),
    (
        "POST",
        "/v1/teams/{team_id}/provider-keys/{provider_key_id}/rotate",
        "provider_key.rotate",
    ),
    ("GET", "/v1/teams/{team_id}/quotas", "quotas.get"),
    ("PUT", "/v1/teams/{team_id}/quotas", "quotas.set"),
    ("GET", "/v1/teams/{team_id}/profiles", "profile.list"),
    ("PUT", "/v1/teams/{team_id}/profiles/{name}", "profile.put"),
    (
        "DELETE",
        "/v1/teams/{team_id}/profiles/{name}",
        "profile.delete",
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
        .routes(routes!(intents::submit_intent))
        .routes(routes!(plans::submit_plan, plans::list_plans))
        .routes(routes!(plans::get_plan))
        .routes(routes!(plans::cancel_plan))
        .routes(routes!(plans::rollback_plan))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::get_session))
        .routes(routes!(sessions::stop_session))
        .routes(routes!(audit::query_audit_records))
        .routes(routes!(events::session_events))
        .routes(routes!(events::task_events))
        .routes(routes!(events::plan_events))
        .routes(routes!(dlq::list_dead_letters))
        .routes(routes!(dlq::get_dead_letter))
        .routes(routes!(dlq::requeue_dead_letter))
        .routes(routes!(dlq::purge_dead_letters))
        .routes(routes!(dlq::queue_stats))
        .routes(routes!(members::list_members, members::add_member))
        .routes(routes!(members::remove_member))
        .routes(routes!(members::list_roles, members::create_role))
        .routes(routes!(api_keys::list_api_keys, api_keys::create_api_key))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(
            provider_keys::list_provider_keys,
            provider_keys::set_provider_key
        ))
        .routes(routes!(provider_keys::rotate_provider_key))
        .routes(routes!(quotas::get_quotas, quotas::put_quotas))
        .routes(routes!(profiles::list_profiles))
        .routes(routes!(profiles::put_profile, profiles::delete_profile))
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
