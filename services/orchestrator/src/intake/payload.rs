//! The task payload the orchestrator runs, and how it becomes a [`StartSpec`].
//!
//! A task's `payload_json` is an object:
//!
//! ```json
//! {
//!   "repository": {"url": "https://git.example.com/app.git", "ref": "main"},
//!   "adapter": "sim",
//!   "prompt": "Fix the failing test",
//!   "limits": {"max_duration_ms": 1800000, "max_cost_micro_usd": 5000000, "max_tokens": 200000},
//!   "sim": {"edits": 2}
//! }
//! ```
//!
//! A task of a plan also has `"plan": {"base": "<40-hex commit>", "run_gate": true}`:
//! the session works on the plan's integration branch (see `crate::plans`); intake
//! sets `plan.id` to the task's plan id (whatever the payload said).
//!
//! `repository.url` is required (`repository` may also be just the URL string);
//! `ref`, `adapter` (the configured default), `prompt` (empty) and `limits` (the
//! configured defaults, 0 = no bound) are optional. Every other key is an adapter
//! argument: the whole payload is the session's payload (the simulated agent reads
//! its flags from `sim`, a command adapter gets it in `GODEL_TASK_PAYLOAD`).

use godel_error::Error;
use serde::Deserialize;

use super::scheduler::SchedulerTask;
use crate::session::{Repository, SessionLimits, StartSpec};

const FIELD: &str = "payload_json";

#[derive(Debug, Deserialize)]
struct Payload {
    repository: Option<RepositoryField>,
    adapter: Option<String>,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    limits: Limits,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RepositoryField {
    Url(String),
    Full {
        url: String,
        #[serde(default, rename = "ref")]
        git_ref: Option<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_duration_ms: Option<u64>,
    #[serde(default)]
    max_cost_micro_usd: u64,
    #[serde(default)]
    max_tokens: u64,
}

/// The session that runs `task` under the lease at `epoch`; `invalid_argument`
/// when the payload does not describe one (a permanent failure of the task).
pub(crate) fn start_spec(task: &SchedulerTask, epoch: u64) -> Result<StartSpec, Error> {
    let mut value: serde_json::Value = serde_json::from_str(&task.payload_json)
        .map_err(|e| Error::invalid_argument(FIELD, format!("the payload is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid_argument(
            FIELD,
            "the payload must be a JSON object",
        ));
    }
    // The plan is the scheduler's word, never the payload's.
    if let Some(plan) = value.get_mut("plan").and_then(|p| p.as_object_mut()) {
        match task.plan_id {
            Some(id) => plan.insert("id".to_owned(), id.to_string().into()),
            None => plan.remove("id"),
        };
    }
    crate::plans::PlanSpec::of_payload(&value)?;
    let payload: Payload = serde_json::from_value(value.clone()).map_err(|e| {
        Error::invalid_argument(FIELD, format!("the payload is not a task payload: {e}"))
    })?;
    let repository = match payload.repository {
        Some(RepositoryField::Url(url)) => Repository { url, git_ref: None },
        Some(RepositoryField::Full { url, git_ref }) => Repository {
            url,
            git_ref: git_ref.filter(|r| !r.is_empty()),
        },
        None => {
            return Err(Error::invalid_argument(
                FIELD,
                "the payload names no `repository`",
            ));
        }
    };
    Ok(StartSpec {
        team_id: task.team_id,
        task_id: task.task_id,
        epoch,
        profile_id: task.profile_id,
        adapter: payload.adapter.filter(|a| !a.is_empty()),
        repository,
        prompt: payload.prompt,
        task_type: task.task_type.clone(),
        payload: value,
        limits: SessionLimits {
            max_duration: payload
                .limits
                .max_duration_ms
                .filter(|ms| *ms > 0)
                .map(std::time::Duration::from_millis),
            max_cost_micro_usd: payload.limits.max_cost_micro_usd,
            max_tokens: payload.limits.max_tokens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use godel_types::{TaskId, TeamId};

    fn task(payload: &str) -> SchedulerTask {
        SchedulerTask {
            team_id: TeamId::new(),
            task_id: TaskId::new(),
            task_type: "code.change".into(),
            payload_json: payload.into(),
            profile_id: None,
            plan_id: None,
            epoch: 3,
            lease_owner: String::new(),
            leased: true,
        }
    }

    #[test]
    fn a_full_payload_maps_to_a_start_spec() {
        let t = task(
            r#"{"repository": {"url": "https://h/r.git", "ref": "dev"}, "adapter": "sim",
                "prompt": "go", "limits": {"max_duration_ms": 5000, "max_tokens": 9},
                "sim": {"edits": 2}}"#,
        );
        let spec = start_spec(&t, 3).unwrap();
        assert_eq!(spec.repository.url, "https://h/r.git");
        assert_eq!(spec.repository.git_ref.as_deref(), Some("dev"));
        assert_eq!(spec.adapter.as_deref(), Some("sim"));
        assert_eq!(spec.prompt, "go");
        assert_eq!(spec.epoch, 3);
        assert_eq!(spec.task_id, t.task_id);
        assert_eq!(spec.task_type, "code.change");
        assert_eq!(
            spec.limits.max_duration,
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(spec.limits.max_tokens, 9);
        assert_eq!(spec.payload["sim"]["edits"], 2);
    }

    #[test]
    fn a_repository_may_be_a_url_and_the_rest_is_optional() {
        let spec = start_spec(&task(r#"{"repository": "/srv/repo"}"#), 1).unwrap();
        assert_eq!(spec.repository.url, "/srv/repo");
        assert_eq!(spec.repository.git_ref, None);
        assert_eq!(spec.adapter, None);
        assert_eq!(spec.limits, SessionLimits::default());
    }

    #[test]
    fn the_plan_id_comes_from_the_task() {
        let base = "b".repeat(40);
        let payload = format!(
            r#"{{"repository": "/r", "plan": {{"id": "pln_forged", "base": "{base}", "run_gate": true}}}}"#
        );
        let mut t = task(&payload);
        let spec = start_spec(&t, 1).unwrap();
        assert!(spec.payload["plan"].get("id").is_none(), "{}", spec.payload);
        let plan = godel_types::PlanId::new();
        t.plan_id = Some(plan);
        let spec = start_spec(&t, 1).unwrap();
        assert_eq!(spec.payload["plan"]["id"], plan.to_string());
        t.payload_json = r#"{"repository": "/r", "plan": {"base": "main"}}"#.into();
        assert!(start_spec(&t, 1).is_err());
    }

    #[test]
    fn payloads_without_a_session_are_invalid() {
        for bad in [
            "not json",
            "[1]",
            "{}",
            r#"{"repository": 5}"#,
            r#"{"repository": "x", "limits": {"cpu": 1}}"#,
        ] {
            let error = start_spec(&task(bad), 1).unwrap_err();
            assert_eq!(error.code, godel_error::ErrorCode::InvalidArgument, "{bad}");
        }
    }
}
