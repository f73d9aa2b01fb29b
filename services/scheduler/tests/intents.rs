//! Intents over gRPC on PostgreSQL: planning against a team's profiles, submitting a
//! reviewed plan (each task's payload built per the contract the orchestrator reads),
//! edited plans checked again, the LLM planner's fallback, and plans listed newest
//! first.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_runtime::RunningService;
use godel_scheduler::{Dependencies, PlannerConfig, QueueConfig, SchedulerConfig};
use godel_store::DatabaseConfig;
use godel_test_utils::postgres::{DbKind, TestDb};
use godel_types::TeamId;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

type Client = SchedulerServiceClient<Channel>;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

struct Scheduler {
    client: Client,
    _running: RunningService,
    _db: TestDb,
    shutdown: CancellationToken,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn scheduler(planner: PlannerConfig) -> Scheduler {
    let db = TestDb::of(DbKind::Postgres).await;
    let config = SchedulerConfig {
        server: godel_runtime::ServerConfig::local(),
        database: DatabaseConfig {
            url: db.url.clone().into(),
            schema: db.schema.clone(),
            ..DatabaseConfig::default()
        },
        queue: QueueConfig {
            dispatch: false,
            ..QueueConfig::default()
        },
        planner,
        ..SchedulerConfig::default()
    };
    let deps = Dependencies {
        bus: godel_bus::connect(&Default::default()).await.unwrap(),
    };
    let shutdown = CancellationToken::new();
    let running = godel_scheduler::start(config, deps, shutdown.clone())
        .await
        .unwrap();
    let client = Client::connect(format!("http://{}", running.grpc_addr()))
        .await
        .unwrap();
    Scheduler {
        client,
        _running: running,
        _db: db,
        shutdown,
    }
}

async fn plan_intent(
    client: &mut Client,
    team: TeamId,
    text: &str,
    planner: &str,
) -> Result<pb::IntentPlan, tonic::Status> {
    client
        .plan_intent(pb::PlanIntentRequest {
            team_id: team.to_string(),
            text: text.to_owned(),
            planner: planner.to_owned(),
        })
        .await
        .map(|r| r.into_inner().plan.unwrap())
}

fn submission(
    team: TeamId,
    plan: pb::IntentPlan,
    gate: Option<pb::IntentGate>,
) -> pb::SubmitIntentPlanRequest {
    pb::SubmitIntentPlanRequest {
        team_id: team.to_string(),
        text: "Add rate limiting to the API".to_owned(),
        repository: Some(pb::IntentRepository {
            url: "/src/app".to_owned(),
            r#ref: "main".to_owned(),
            commit: COMMIT.to_owned(),
        }),
        gate,
        plan: Some(plan),
        idempotency_key: String::new(),
    }
}

#[tokio::test]
async fn intents_are_planned_against_the_teams_profiles_and_submitted_with_contract_payloads() {
    let mut s = scheduler(PlannerConfig::default()).await;
    let team = TeamId::new();

    // No LLM configured: auto plans deterministically and says so.
    let plan = plan_intent(&mut s.client, team, "Add rate limiting to the API", "auto")
        .await
        .unwrap();
    assert_eq!(plan.planner, "deterministic");
    assert!(
        plan.fallback_reason.contains("no LLM planner"),
        "{}",
        plan.fallback_reason
    );
    assert!(
        plan.nodes.iter().all(|n| n.profile == "simulated"),
        "{plan:?}"
    );
    let explicit = plan_intent(
        &mut s.client,
        team,
        "Add rate limiting to the API",
        "deterministic",
    )
    .await
    .unwrap();
    assert!(explicit.fallback_reason.is_empty());
    let err = plan_intent(&mut s.client, team, "x", "oracle")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("oracle"), "{}", err.message());

    // A team profile for implementation comes first for that type.
    let coder = s
        .client
        .put_profile(pb::PutProfileRequest {
            team_id: team.to_string(),
            profile: Some(pb::Profile {
                name: "coder".into(),
                adapter: "claude-code".into(),
                model: "opus".into(),
                task_types: vec!["implement".into()],
                limits: Some(pb::ProfileLimits {
                    max_duration: Some(std::time::Duration::from_secs(900).into()),
                    max_tokens: 50_000,
                    max_cost_micro_usd: 1_000_000,
                }),
                estimated_cost_micro_usd: 250_000,
                preference: 10,
                ..pb::Profile::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    let plan = plan_intent(&mut s.client, team, "Add rate limiting to the API", "")
        .await
        .unwrap();
    let types: Vec<&str> = plan.nodes.iter().map(|n| n.task_type.as_str()).collect();
    assert_eq!(types, ["implement", "test", "review"], "{plan:?}");
    assert_eq!(plan.nodes[0].profile, "coder");
    assert_eq!(plan.nodes[0].estimated_cost_micro_usd, 250_000);
    assert_eq!(plan.estimated_cost_micro_usd, 250_000);
    assert_eq!(plan.nodes[2].depends_on, ["test"]);

    let gate = pb::IntentGate {
        command: "cargo test".into(),
        timeout: String::new(),
    };
    let submitted = s
        .client
        .submit_intent_plan(submission(team, plan.clone(), Some(gate)))
        .await
        .unwrap()
        .into_inner();
    assert!(submitted.created);
    let stored = submitted.plan.unwrap();
    assert!(stored.id.starts_with("pln_"));
    assert_eq!(stored.task_count, 3);
    let ids: HashMap<String, String> = submitted
        .tasks
        .iter()
        .map(|t| {
            let task = t.task.as_ref().unwrap();
            (task.plan_key.clone(), task.id.clone())
        })
        .collect();
    let builtins = s
        .client
        .list_profiles(pb::ListProfilesRequest {
            team_id: team.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .profiles;
    let simulated = builtins.iter().find(|p| p.name == "simulated").unwrap();
    for planned in &submitted.tasks {
        let task = planned.task.as_ref().unwrap();
        let node = plan.nodes.iter().find(|n| n.key == task.plan_key).unwrap();
        assert_eq!(task.task_type, node.task_type);
        let payload: Value = serde_json::from_str(&task.payload_json).unwrap();
        assert_eq!(
            payload["repository"],
            json!({"url": "/src/app", "ref": "main"})
        );
        assert_eq!(payload["prompt"], node.prompt.as_str());
        assert_eq!(payload["plan"]["base"], COMMIT);
        assert_eq!(
            payload["plan"]["run_gate"],
            node.task_type != "review",
            "{}",
            node.key
        );
        assert_eq!(
            payload["gate"],
            json!({"command": "cargo test", "timeout": "10m"})
        );
        let depends: Vec<&str> = node.depends_on.iter().map(|k| ids[k].as_str()).collect();
        assert_eq!(planned.depends_on, depends, "{}", node.key);
        if node.profile == "coder" {
            assert_eq!(task.profile_id, coder.id);
            assert_eq!(payload["adapter"], "claude-code");
            assert_eq!(payload["model"], "opus");
            assert_eq!(
                payload["limits"],
                json!({"max_duration_ms": 900_000, "max_tokens": 50_000, "max_cost_micro_usd": 1_000_000})
            );
            assert!(payload.get("sim").is_none());
        } else {
            assert_eq!(task.profile_id, simulated.id);
            assert_eq!(payload["adapter"], "sim");
            assert!(payload.get("model").is_none());
            assert_eq!(payload["sim"], json!({"dir": format!("sim/{}", node.key)}));
        }
    }

    // An edited plan is checked again: a cycle is named, and every problem listed.
    let mut cyclic = plan.clone();
    cyclic.nodes[0].depends_on = vec!["review".into()];
    let err = s
        .client
        .submit_intent_plan(submission(team, cyclic, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("cycle"), "{}", err.message());
    for key in ["implement-1", "test", "review"] {
        assert!(err.message().contains(key), "{}", err.message());
    }
    let mut broken = plan.clone();
    broken.nodes[1].profile = "nobody".into();
    broken.nodes[2].task_type = "dance".into();
    let err = s
        .client
        .submit_intent_plan(submission(team, broken, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("nobody") && err.message().contains("dance"),
        "{}",
        err.message()
    );
    // A base commit that is not one is refused.
    let mut request = submission(team, plan.clone(), None);
    request.repository.as_mut().unwrap().commit = "main".into();
    let err = s.client.submit_intent_plan(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("40 hex"), "{}", err.message());

    // Plans are listed newest first, a page at a time; other teams see none.
    let mut second = plan.clone();
    second.summary = "the second plan".into();
    let newer = s
        .client
        .submit_intent_plan(submission(team, second, None))
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    let list = |page_size: u32, page_token: String| pb::ListPlansRequest {
        team_id: team.to_string(),
        page: Some(godel_proto::common::v1::PageRequest {
            page_size,
            page_token,
        }),
    };
    let all = s
        .client
        .list_plans(list(0, String::new()))
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<&str> = all.plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(listed, [newer.id.as_str(), stored.id.as_str()]);
    assert_eq!(all.plans[0].name, "the second plan");
    assert_eq!(all.plans[1].task_count, 3);
    assert!(all.page.unwrap().next_page_token.is_empty());
    let first = s
        .client
        .list_plans(list(1, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.plans.len(), 1);
    assert_eq!(first.plans[0].id, newer.id);
    let token = first.page.unwrap().next_page_token;
    assert_eq!(token, newer.id);
    let rest = s
        .client
        .list_plans(list(1, token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.plans.len(), 1);
    assert_eq!(rest.plans[0].id, stored.id);
    let other = s
        .client
        .list_plans(pb::ListPlansRequest {
            team_id: TeamId::new().to_string(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other.plans.is_empty());
}

#[tokio::test]
async fn a_failing_llm_planner_falls_back_to_the_deterministic_one_saying_why() {
    let llm = godel_test_utils::llm::ScriptedLlm::start(Default::default())
        .await
        .unwrap();
    llm.fail_with(Some(503));
    let mut s = scheduler(PlannerConfig {
        llm_base_url: Some(llm.base_url()),
        llm_model: "planner-model".into(),
        llm_token: Some("planner-secret".to_owned().into()),
        ..PlannerConfig::default()
    })
    .await;
    let team = TeamId::new();
    for requested in ["auto", "llm"] {
        let plan = plan_intent(&mut s.client, team, "Fix the login bug", requested)
            .await
            .unwrap();
        assert_eq!(plan.planner, "deterministic", "{requested}");
        assert!(
            plan.fallback_reason.contains("llm planner failed")
                && plan.fallback_reason.contains("503"),
            "{requested}: {}",
            plan.fallback_reason
        );
        assert!(!plan.nodes.is_empty());
    }
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].credential(), Some("planner-secret"));
    // Asking for the deterministic planner does not ask the model.
    let plan = plan_intent(&mut s.client, team, "Fix the login bug", "deterministic")
        .await
        .unwrap();
    assert!(plan.fallback_reason.is_empty());
    assert_eq!(llm.requests().len(), 2);
}
