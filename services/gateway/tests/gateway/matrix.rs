//! The route matrix: for every route the gateway serves, what it needs of the caller
//! (per docs/permissions.md), how to fill its path and what body to send. The tests
//! walk `godel_gateway::ROUTES`, so a route served without an entry here fails them:
//! add its need to [`need`], its path ids to [`Ids::fill`] and, for POST/PUT, its body
//! to [`body`].

use serde_json::{Value, json};

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated caller.
    Any,
    /// An org-admin.
    OrgAdmin,
    /// This permission in the team the path names.
    Permission(&'static str),
}

/// What `method template` needs.
pub fn need(method: &str, template: &str) -> Need {
    use Need::{Any, OrgAdmin, Permission as P};
    let path = template
        .strip_prefix("/v1/teams/{team_id}")
        .unwrap_or(template);
    match (method, path) {
        ("GET", "/v1/me" | "/v1/teams") => Any,
        ("POST", "/v1/teams") => OrgAdmin,
        ("GET", "") => P("teams:read"),
        // Tasks.
        ("POST", "/tasks") => P("tasks:create"),
        ("GET", "/tasks" | "/tasks/{task_id}" | "/tasks/{task_id}/events") => P("tasks:read"),
        ("POST", "/tasks/{task_id}/cancel") => P("tasks:cancel"),
        // Sessions.
        ("GET", "/sessions" | "/sessions/{session_id}" | "/sessions/{session_id}/events") => {
            P("sessions:read")
        }
        ("POST", "/sessions/{session_id}/stop") => P("sessions:stop"),
        // Plans and intents.
        ("POST", "/intents" | "/plans") => P("plans:create"),
        ("GET", "/plans" | "/plans/{plan_id}") => P("plans:read"),
        ("POST", "/plans/{plan_id}/cancel" | "/plans/{plan_id}/rollback") => P("plans:cancel"),
        ("GET", "/plans/{plan_id}/events") => P("plans:read"),
        // Dead letters and queue statistics.
        ("GET", "/dlq" | "/dlq/{task_id}" | "/queue/stats") => P("dlq:read"),
        ("POST", "/dlq/{task_id}/requeue" | "/dlq/purge") => P("dlq:manage"),
        // Members, roles, keys, quotas, profiles.
        ("GET", "/members" | "/roles" | "/profiles") => P("teams:read"),
        ("POST" | "DELETE", "/members" | "/members/{user_id}") => P("members:manage"),
        ("POST", "/roles") => P("roles:manage"),
        ("GET" | "POST", "/api-keys") | ("DELETE", "/api-keys/{key_id}") => P("keys:manage"),
        ("GET" | "POST", "/provider-keys")
        | ("POST", "/provider-keys/{provider_key_id}/rotate") => P("provider_keys:manage"),
        ("GET", "/quotas") => P("quotas:read"),
        ("PUT", "/quotas") => P("quotas:manage"),
        ("PUT" | "DELETE", "/profiles/{name}") => P("teams:manage"),
        // Audit.
        ("GET", "/audit/records") => P("audit:read"),
        _ => panic!(
            "{method} {template} is served but not in the route matrix \
             (services/gateway/tests/gateway/matrix.rs): add what it needs"
        ),
    }
}

/// The ids a path is filled with.
#[derive(Debug, Clone)]
pub struct Ids {
    pub team: String,
    pub task: String,
    pub session: String,
    pub plan: String,
    pub user: String,
    pub key: String,
    pub provider_key: String,
    pub profile: String,
}

impl Ids {
    /// Ids of things that do not exist, in `team`.
    pub fn unknown(team: &str) -> Self {
        Self {
            team: team.to_owned(),
            task: godel_types::TaskId::new().to_string(),
            session: godel_types::SessionId::new().to_string(),
            plan: godel_types::PlanId::new().to_string(),
            user: godel_types::UserId::new().to_string(),
            key: godel_types::ApiKeyId::new().to_string(),
            provider_key: godel_types::SecretId::new().to_string(),
            profile: "matrix-profile".to_owned(),
        }
    }

    /// `template` with every placeholder replaced.
    pub fn fill(&self, template: &str) -> String {
        let path = template
            .replace("{team_id}", &self.team)
            .replace("{task_id}", &self.task)
            .replace("{session_id}", &self.session)
            .replace("{plan_id}", &self.plan)
            .replace("{user_id}", &self.user)
            .replace("{key_id}", &self.key)
            .replace("{provider_key_id}", &self.provider_key)
            .replace("{name}", &self.profile);
        assert!(
            !path.contains('{'),
            "{template} has a path id the route matrix does not fill \
             (services/gateway/tests/gateway/matrix.rs, Ids::fill)"
        );
        path
    }
}

/// A valid body for a POST or PUT route (so that only the permission decides).
pub fn body(method: &str, template: &str) -> Option<Value> {
    if method != "POST" && method != "PUT" {
        return None;
    }
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let path = template
        .strip_prefix("/v1/teams/{team_id}")
        .unwrap_or(template);
    Some(match path {
        "/v1/teams" => json!({"name": format!("t-{}", &unique[..12])}),
        "/tasks" => json!({"task_type": "code.fix", "payload": {"secret": "team-a-only"}}),
        "/intents" => json!({"text": "Add a health endpoint", "dry_run": true}),
        "/plans" => json!({
            "repository": {"url": "/src/app", "commit": "0123456789abcdef0123456789abcdef01234567"},
            "plan": {"nodes": [{"key": "implement-1", "taskType": "implement",
                                "profile": "simulated", "prompt": "team-a-only"}]},
        }),
        "/tasks/{task_id}/cancel"
        | "/sessions/{session_id}/stop"
        | "/plans/{plan_id}/cancel"
        | "/plans/{plan_id}/rollback" => {
            json!({"reason": "route matrix"})
        }
        "/dlq/{task_id}/requeue" => json!({}),
        "/dlq/purge" => json!({"task_ids": [godel_types::TaskId::new().to_string()]}),
        "/members" => {
            json!({"user_id": godel_types::UserId::new().to_string(), "roles": ["viewer"]})
        }
        "/roles" => json!({"name": format!("r-{}", &unique[..12]), "permissions": ["tasks:read"]}),
        "/api-keys" => json!({"name": format!("k-{unique}"), "permissions": []}),
        "/provider-keys" => {
            json!({"provider": "openai", "name": format!("k-{unique}"), "secret": "sk-matrix"})
        }
        "/provider-keys/{provider_key_id}/rotate" => json!({"secret": "sk-matrix-2"}),
        "/quotas" => json!({"max_queued_tasks": 1000}),
        "/profiles/{name}" => json!({"adapter": "sim", "taskTypes": ["implement"]}),
        _ => panic!(
            "{method} {template} has no body in the route matrix \
             (services/gateway/tests/gateway/matrix.rs, body)"
        ),
    })
}
