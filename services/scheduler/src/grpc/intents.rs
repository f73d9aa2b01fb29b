//! The intent RPCs of `SchedulerService`: `PlanIntent` (an engineer's request
//! planned against the team's profiles; nothing is submitted), `SubmitIntentPlan`
//! (a possibly edited plan checked again, each task's payload built, submitted like
//! any plan) and `ListPlans`.
//!
//! The payload of every task of an intent's plan (read by the orchestrator):
//!
//! ```json
//! {"repository": {"url": "…", "ref": "…"}, "adapter": "sim", "model": "…",
//!  "prompt": "…", "limits": {"max_duration_ms": 3600000, "max_tokens": 0, "max_cost_micro_usd": 0},
//!  "plan": {"base": "<40-hex commit>", "run_gate": true},
//!  "gate": {"command": "cargo test", "timeout": "10m"},
//!  "sim": {"dir": "sim/<node key>"}}
//! ```
//!
//! `model` only when the profile names one, `gate` only when the intent named one,
//! `sim` only for the `sim` adapter; `run_gate` is true for code-changing task types.

use std::collections::HashMap;
use std::time::Duration;

use godel_error::Error;
use godel_planner::{Catalog, LlmPlanner, Node, Plan, Planner, ValidNode, ValidPlan};
use godel_proto::convert::parse_optional_id;
use godel_proto::scheduler::v1 as pb;
use godel_types::{PlanId, TeamId};
use serde_json::{Value, json};

use super::{plan_tasks_to_pb, plan_to_pb, team};
use crate::config::PlannerConfig;
use crate::profiles::{Profile, Profiles, catalog};
use crate::queue::{MAX_PLAN_NAME_LEN, NewPlan, NewTask, PlanTask, Queue};

/// A gate's timeout when the intent names none.
const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(600);

/// How intents are planned: the LLM planner when one is configured, and the bounds
/// of every plan.
#[derive(Debug, Clone)]
pub(crate) struct Planning {
    llm: Option<LlmPlanner>,
    /// No `llm_token`: the LLM planner asks with the access token of the person
    /// planning (forwarded by the gateway), for their team — Godel's LLM proxy then
    /// uses the team's provider key.
    as_caller: bool,
    max_nodes: usize,
    max_cost_micro_usd: u64,
}

impl Planning {
    pub(crate) fn new(config: &PlannerConfig) -> Self {
        let llm = config
            .llm_base_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
            .map(|url| {
                let token = config
                    .llm_token
                    .clone()
                    .unwrap_or_else(|| String::new().into());
                let mut llm = LlmPlanner::new(url, token, config.llm_model.clone());
                llm.timeout = config.llm_timeout;
                llm
            });
        Self {
            llm,
            as_caller: config.llm_token.is_none(),
            max_nodes: config.max_nodes,
            max_cost_micro_usd: config.max_cost_micro_usd,
        }
    }

    /// The LLM planner for a request of `team` by the caller with `caller_token`:
    /// the configured one, or a copy asking as the caller. `Err`: why it cannot ask.
    fn llm_for(
        &self,
        team: TeamId,
        caller_token: Option<&str>,
    ) -> Option<Result<LlmPlanner, String>> {
        let llm = self.llm.as_ref()?;
        if !self.as_caller {
            return Some(Ok(llm.clone()));
        }
        Some(match caller_token {
            Some(token) => {
                let mut llm = llm.clone();
                llm.token = token.to_owned().into();
                llm.team = Some(team.to_string());
                Ok(llm)
            }
            None => Err(
                "the request carries no caller token to ask the LLM planner with, so \
                         the deterministic planner planned"
                    .to_owned(),
            ),
        })
    }

    /// The planner `requested` names (`None`: the deterministic one) and, when the
    /// request cannot be honoured as asked, why.
    fn choose<'a>(
        &self,
        requested: &str,
        llm: Option<&'a Result<LlmPlanner, String>>,
    ) -> Result<(Option<&'a dyn Planner>, Option<String>), Error> {
        if let Some(Err(why)) = llm
            && matches!(requested.trim(), "" | "auto" | "llm")
        {
            return Ok((None, Some(why.clone())));
        }
        let llm = llm.and_then(|l| l.as_ref().ok()).map(|p| p as &dyn Planner);
        match requested.trim() {
            "" | "auto" => Ok(match llm {
                Some(llm) => (Some(llm), None),
                None => (
                    None,
                    Some(
                        "auto: no LLM planner is configured (the scheduler's \
                         `planner.llm_base_url`), so the deterministic planner planned"
                            .to_owned(),
                    ),
                ),
            }),
            "deterministic" => Ok((None, None)),
            "llm" => Ok(match llm {
                Some(llm) => (Some(llm), None),
                None => (
                    None,
                    Some(
                        "no LLM planner is configured (set the scheduler's \
                         `planner.llm_base_url`); the deterministic planner stood in"
                            .to_owned(),
                    ),
                ),
            }),
            other => Err(Error::invalid_argument(
                "planner",
                format!("unknown planner `{other}`: use auto, deterministic or llm"),
            )),
        }
    }

    fn catalog(&self, profiles: &[Profile]) -> Catalog {
        catalog(profiles, self.max_nodes, self.max_cost_micro_usd)
    }
}

fn invalid_plan(field: &str, invalid: &godel_planner::InvalidPlan) -> Error {
    Error::invalid_argument(field, invalid.to_string())
}

fn node_to_pb(node: &ValidNode, catalog: &Catalog) -> pb::IntentNode {
    pb::IntentNode {
        key: node.key.clone(),
        task_type: node.task_type.as_str().to_owned(),
        profile: node.profile.clone(),
        prompt: node.prompt.clone(),
        depends_on: node.depends_on.clone(),
        estimated_cost_micro_usd: catalog
            .profile(&node.profile)
            .map_or(0, |p| p.estimated_cost_micro_usd),
    }
}

fn plan_to_intent_pb(
    plan: &ValidPlan,
    catalog: &Catalog,
    planner: &str,
    fallback_reason: Option<String>,
) -> pb::IntentPlan {
    pb::IntentPlan {
        summary: plan.summary.clone(),
        nodes: plan.nodes.iter().map(|n| node_to_pb(n, catalog)).collect(),
        estimated_cost_micro_usd: plan.estimated_cost_micro_usd,
        planner: planner.to_owned(),
        fallback_reason: fallback_reason.unwrap_or_default(),
    }
}

pub(super) async fn plan(
    planning: &Planning,
    profiles: &Profiles,
    req: pb::PlanIntentRequest,
    caller_token: Option<&str>,
) -> Result<pb::PlanIntentResponse, Error> {
    let team = team(&req.team_id)?;
    let llm = planning.llm_for(team, caller_token);
    let (planner, note) = planning.choose(&req.planner, llm.as_ref())?;
    let catalog = planning.catalog(&profiles.list(team).await?);
    let planned = godel_planner::plan_intent(planner, &req.text, &catalog)
        .await
        .map_err(|e| invalid_plan("text", &e))?;
    let reason = planned.fallback_reason.or(note);
    Ok(pb::PlanIntentResponse {
        plan: Some(plan_to_intent_pb(
            &planned.plan,
            &catalog,
            planned.planner,
            reason,
        )),
    })
}

/// Where an intent's tasks work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repository {
    pub(crate) url: String,
    pub(crate) git_ref: String,
    /// 40 lowercase hex digits.
    pub(crate) commit: String,
}

/// The quality gate of an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gate {
    pub(crate) command: String,
    pub(crate) timeout: Duration,
}

fn repository(repository: Option<pb::IntentRepository>) -> Result<Repository, Error> {
    let repository = repository.ok_or_else(|| {
        Error::invalid_argument("repository", "name the repository the tasks work in")
    })?;
    if repository.url.trim().is_empty() {
        return Err(Error::invalid_argument(
            "repository.url",
            "name the repository: a path on the orchestrator's machine or a git URL",
        ));
    }
    let commit = repository.commit.trim().to_ascii_lowercase();
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid_argument(
            "repository.commit",
            format!(
                "the base commit must be 40 hex digits, got `{}` (resolve it with \
                 `git rev-parse` or `git ls-remote`)",
                repository.commit
            ),
        ));
    }
    Ok(Repository {
        url: repository.url.trim().to_owned(),
        git_ref: repository.r#ref.trim().to_owned(),
        commit,
    })
}

fn gate(gate: Option<pb::IntentGate>) -> Result<Option<Gate>, Error> {
    let Some(gate) = gate else { return Ok(None) };
    if gate.command.trim().is_empty() {
        return Err(Error::invalid_argument(
            "gate.command",
            "a gate needs a command (or leave the gate out)",
        ));
    }
    let timeout = if gate.timeout.trim().is_empty() {
        DEFAULT_GATE_TIMEOUT
    } else {
        godel_config::duration::parse(gate.timeout.trim())
            .map_err(|e| Error::invalid_argument("gate.timeout", e))?
    };
    if timeout.is_zero() {
        return Err(Error::invalid_argument(
            "gate.timeout",
            "a gate's timeout must be above zero",
        ));
    }
    Ok(Some(Gate {
        command: gate.command,
        timeout,
    }))
}

/// The payload of the task for `node`, run with `profile` (see the module docs).
pub(crate) fn task_payload(
    node: &ValidNode,
    profile: &Profile,
    repository: &Repository,
    gate: Option<&Gate>,
) -> Value {
    let spec = &profile.spec;
    let mut limits = json!({
        "max_tokens": spec.limits.max_tokens,
        "max_cost_micro_usd": spec.limits.max_cost_micro_usd,
    });
    if let Some(duration) = spec.limits.max_duration {
        limits["max_duration_ms"] = json!(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    }
    let mut payload = json!({
        "repository": {"url": repository.url, "ref": repository.git_ref},
        "adapter": spec.adapter,
        "prompt": node.prompt,
        "limits": limits,
        "plan": {"base": repository.commit, "run_gate": node.task_type.changes_code()},
    });
    if !spec.model.is_empty() {
        payload["model"] = json!(spec.model);
    }
    if let Some(gate) = gate {
        payload["gate"] = json!({
            "command": gate.command,
            "timeout": godel_config::duration::format(gate.timeout),
        });
    }
    if spec.adapter == "sim" {
        payload["sim"] = json!({"dir": format!("sim/{}", node.key)});
    }
    payload
}

/// The plan's name: its summary, else the intent's text, cut to the longest name.
fn plan_name(summary: &str, text: &str) -> String {
    let name = if summary.trim().is_empty() {
        text.trim()
    } else {
        summary.trim()
    };
    let mut end = name.len().min(MAX_PLAN_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

pub(super) async fn submit(
    planning: &Planning,
    profiles: &Profiles,
    queue: &Queue,
    req: pb::SubmitIntentPlanRequest,
) -> Result<pb::SubmitPlanResponse, Error> {
    let team = team(&req.team_id)?;
    let repository = repository(req.repository)?;
    let gate = gate(req.gate)?;
    let proposed = req
        .plan
        .ok_or_else(|| Error::invalid_argument("plan", "submit the plan PlanIntent returned"))?;
    let plan = Plan {
        summary: proposed.summary,
        nodes: proposed
            .nodes
            .into_iter()
            .map(|n| Node {
                key: n.key,
                task_type: n.task_type,
                profile: n.profile,
                prompt: n.prompt,
                depends_on: n.depends_on,
            })
            .collect(),
    };
    let team_profiles = profiles.list(team).await?;
    let catalog = planning.catalog(&team_profiles);
    let valid = godel_planner::validate(&plan, &catalog).map_err(|e| invalid_plan("plan", &e))?;
    let by_name: HashMap<&str, &Profile> = team_profiles
        .iter()
        .map(|p| (p.spec.name.as_str(), p))
        .collect();
    let tasks = valid
        .nodes
        .iter()
        .map(|node| {
            let profile = by_name.get(node.profile.as_str()).ok_or_else(|| {
                Error::invalid_argument(
                    "plan",
                    format!(
                        "task `{}` names the unknown profile `{}`",
                        node.key, node.profile
                    ),
                )
            })?;
            let mut task = NewTask::new(
                node.task_type.as_str(),
                task_payload(node, profile, &repository, gate.as_ref()),
            );
            task.profile_id = Some(profile.id);
            Ok(PlanTask::new(node.key.clone(), task).after(node.depends_on.iter().cloned()))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let new_plan = NewPlan {
        name: plan_name(&valid.summary, &req.text),
        idempotency_key: (!req.idempotency_key.is_empty()).then_some(req.idempotency_key),
        tasks,
    };
    let (detail, created) = queue.submit_plan(team, new_plan).await?;
    Ok(pb::SubmitPlanResponse {
        plan: Some(plan_to_pb(&detail.plan)),
        tasks: plan_tasks_to_pb(&detail),
        created,
    })
}

pub(super) async fn list(
    queue: &Queue,
    req: pb::ListPlansRequest,
) -> Result<pb::ListPlansResponse, Error> {
    let team = team(&req.team_id)?;
    let page = req.page.unwrap_or_default();
    let before: Option<PlanId> = parse_optional_id("page.page_token", &page.page_token)?;
    let limit = usize::try_from(page.page_size).unwrap_or(usize::MAX);
    let listed = queue.list_plans(team, before, limit).await?;
    Ok(pb::ListPlansResponse {
        plans: listed.plans.iter().map(plan_to_pb).collect(),
        page: Some(godel_proto::common::v1::PageResponse {
            next_page_token: listed.next.map(|id| id.to_string()).unwrap_or_default(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::builtin;
    use godel_planner::TaskType;

    fn node(key: &str, task_type: TaskType) -> ValidNode {
        ValidNode {
            key: key.to_owned(),
            task_type,
            profile: "simulated".to_owned(),
            prompt: format!("do {key}"),
            depends_on: Vec::new(),
        }
    }

    #[test]
    fn payloads_follow_the_contract() {
        let sim = builtin().into_iter().next().unwrap();
        let repo = Repository {
            url: "/src/app".to_owned(),
            git_ref: "main".to_owned(),
            commit: "a".repeat(40),
        };
        let gate = Gate {
            command: "make check".to_owned(),
            timeout: Duration::from_secs(600),
        };
        let payload = task_payload(
            &node("implement-1", TaskType::Implement),
            &sim,
            &repo,
            Some(&gate),
        );
        assert_eq!(
            payload["repository"],
            json!({"url": "/src/app", "ref": "main"})
        );
        assert_eq!(payload["adapter"], "sim");
        assert!(payload.get("model").is_none(), "{payload}");
        assert_eq!(payload["prompt"], "do implement-1");
        assert_eq!(payload["limits"]["max_duration_ms"], 3_600_000);
        assert_eq!(
            payload["plan"],
            json!({"base": "a".repeat(40), "run_gate": true})
        );
        assert_eq!(
            payload["gate"],
            json!({"command": "make check", "timeout": "10m"})
        );
        assert_eq!(payload["sim"], json!({"dir": "sim/implement-1"}));

        let mut pi = builtin().into_iter().nth(1).unwrap();
        pi.spec.model = "gpt-5".to_owned();
        let payload = task_payload(&node("review-1", TaskType::Review), &pi, &repo, None);
        assert_eq!(payload["model"], "gpt-5");
        assert_eq!(payload["plan"]["run_gate"], false);
        assert!(
            payload.get("gate").is_none() && payload.get("sim").is_none(),
            "{payload}"
        );
    }

    #[test]
    fn names_are_cut_at_a_character_boundary() {
        assert_eq!(plan_name("", "  fix it "), "fix it");
        assert_eq!(plan_name("Summary", "text"), "Summary");
        let long = "é".repeat(200);
        let name = plan_name(&long, "");
        assert!(name.len() <= MAX_PLAN_NAME_LEN && name.chars().all(|c| c == 'é'));
    }

    #[test]
    fn bad_repositories_and_gates_are_refused() {
        let repo = |commit: &str| pb::IntentRepository {
            url: "/src".to_owned(),
            r#ref: String::new(),
            commit: commit.to_owned(),
        };
        assert!(repository(Some(repo(&"A".repeat(40)))).is_ok());
        for bad in ["", "abc", &"g".repeat(40)] {
            let err = repository(Some(repo(bad))).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("repository.commit"), "{bad}");
        }
        assert!(repository(None).is_err());
        let g = |command: &str, timeout: &str| pb::IntentGate {
            command: command.to_owned(),
            timeout: timeout.to_owned(),
        };
        assert_eq!(
            gate(Some(g("make", ""))).unwrap().unwrap().timeout,
            DEFAULT_GATE_TIMEOUT
        );
        assert_eq!(
            gate(Some(g("make", "90s"))).unwrap().unwrap().timeout,
            Duration::from_secs(90)
        );
        assert!(gate(Some(g(" ", "1m"))).is_err());
        assert!(gate(Some(g("make", "soon"))).is_err());
        assert!(gate(None).unwrap().is_none());
    }
}
