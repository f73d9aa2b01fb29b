//! Planning end to end: the deterministic planner on a table of requests, validation
//! of bad plans, and the LLM planner against a real HTTP model (the scripted
//! provider) with its fallback.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use godel_config::Secret;
use godel_planner::{
    Catalog, Deterministic, LlmPlanner, Node, Plan, Planner, Problem, ProfileInfo, TaskType,
    plan_intent, validate,
};
use godel_test_utils::llm::{Script, ScriptedLlm};

fn profile(name: &str, handles: &[TaskType], cost: u64) -> ProfileInfo {
    ProfileInfo {
        name: name.to_owned(),
        handles: handles.iter().copied().collect::<BTreeSet<_>>(),
        estimated_cost_micro_usd: cost,
    }
}

fn catalog() -> Catalog {
    Catalog {
        profiles: vec![
            profile("coder", &[TaskType::Implement, TaskType::Refactor], 200_000),
            profile("tester", &[TaskType::Test], 100_000),
            profile(
                "reviewer",
                &[TaskType::Review, TaskType::Docs, TaskType::Investigate],
                50_000,
            ),
        ],
        max_nodes: 10,
        max_cost_micro_usd: 2_000_000,
    }
}

/// (key, type, profile, dependencies) of each task, in the validated order.
type Shape = Vec<(String, TaskType, String, Vec<String>)>;

async fn shape(request: &str) -> (Shape, Vec<Vec<String>>) {
    let planned = plan_intent(None, request, &catalog()).await.unwrap();
    assert_eq!(planned.planner, "deterministic");
    assert_eq!(planned.fallback_reason, None);
    let shape = planned
        .plan
        .nodes
        .iter()
        .map(|n| {
            (
                n.key.clone(),
                n.task_type,
                n.profile.clone(),
                n.depends_on.clone(),
            )
        })
        .collect();
    let layers = planned
        .plan
        .layers()
        .into_iter()
        .map(|l| l.into_iter().map(str::to_owned).collect())
        .collect();
    (shape, layers)
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| (*i).to_owned()).collect()
}

/// A request, the layers of task keys it plans to, and some tasks' type and profile.
type Case<'a> = (
    &'a str,
    &'a [&'a [&'a str]],
    &'a [(&'a str, TaskType, &'a str)],
);

#[tokio::test]
async fn the_deterministic_planner_on_a_table_of_requests() {
    use TaskType::*;
    // (request, layers of keys, each key's type and profile)
    let table: &[Case] = &[
        (
            "Add a health endpoint to the API",
            &[&["implement-1"], &["test"], &["review"]],
            &[
                ("implement-1", Implement, "coder"),
                ("test", Test, "tester"),
                ("review", Review, "reviewer"),
            ],
        ),
        (
            "Add CRUD endpoints for users, teams and projects",
            &[
                &["implement-1", "implement-2", "implement-3"],
                &["test"],
                &["review"],
            ],
            &[
                ("implement-2", Implement, "coder"),
                ("test", Test, "tester"),
            ],
        ),
        (
            "Refactor the retry logic and document it",
            &[&["refactor-1"], &["docs"], &["test"], &["review"]],
            &[
                ("refactor-1", Refactor, "coder"),
                ("docs", Docs, "reviewer"),
            ],
        ),
        (
            "Why does the login page time out on Safari?",
            &[&["investigate-1"]],
            &[("investigate-1", Investigate, "reviewer")],
        ),
        (
            "Increase test coverage of the parser",
            &[&["test-1"], &["review"]],
            &[("test-1", Test, "tester")],
        ),
        (
            "Review the queue module",
            &[&["review-1"]],
            &[("review-1", Review, "reviewer")],
        ),
        (
            "Write docs for the export to CSV and JSON",
            &[&["docs-1", "docs-2"], &["review"]],
            &[("docs-1", Docs, "reviewer")],
        ),
    ];
    for (request, layers, typed) in table {
        let (shape, got_layers) = shape(request).await;
        let expected: Vec<Vec<String>> = layers.iter().map(|l| s(l)).collect();
        assert_eq!(got_layers, expected, "{request}: {shape:?}");
        for (key, task_type, profile) in *typed {
            let node = shape
                .iter()
                .find(|n| n.0 == *key)
                .unwrap_or_else(|| panic!("{request}: no task {key} in {shape:?}"));
            assert_eq!(
                (node.1, node.2.as_str()),
                (*task_type, *profile),
                "{request}"
            );
        }
    }
    // A branch's prompt asks for its own item only.
    let planned = plan_intent(
        None,
        "Add CRUD endpoints for users, teams and projects",
        &catalog(),
    )
    .await
    .unwrap();
    let teams = &planned
        .plan
        .nodes
        .iter()
        .find(|n| n.key == "implement-2")
        .unwrap();
    assert!(
        teams.prompt.starts_with("Add CRUD endpoints for teams."),
        "{}",
        teams.prompt
    );
    assert_eq!(
        planned.plan.estimated_cost_micro_usd,
        3 * 200_000 + 100_000 + 50_000
    );
}

fn node(key: &str, task_type: &str, profile: &str, deps: &[&str]) -> Node {
    Node {
        key: key.to_owned(),
        task_type: task_type.to_owned(),
        profile: profile.to_owned(),
        prompt: format!("do {key}"),
        depends_on: s(deps),
    }
}

fn problems(nodes: Vec<Node>) -> Vec<Problem> {
    validate(
        &Plan {
            summary: String::new(),
            nodes,
        },
        &catalog(),
    )
    .unwrap_err()
    .problems
}

#[test]
fn validation_rejects_bad_plans_naming_the_problem() {
    assert_eq!(
        problems(vec![
            node("a", "implement", "coder", &["c"]),
            node("b", "test", "tester", &["a"]),
            node("c", "review", "reviewer", &["b"]),
        ]),
        [Problem::Cycle {
            keys: s(&["a", "c", "b", "a"])
        }]
    );
    assert_eq!(
        problems(vec![node("a", "deploy", "coder", &[])]),
        [Problem::UnknownTaskType {
            key: "a".into(),
            task_type: "deploy".into()
        }]
    );
    assert_eq!(
        problems(vec![node("a", "implement", "wizard", &[])]),
        [Problem::UnknownProfile {
            key: "a".into(),
            profile: "wizard".into()
        }]
    );
    assert_eq!(
        problems(vec![node("a", "test", "coder", &[])]),
        [Problem::ProfileCannot {
            key: "a".into(),
            profile: "coder".into(),
            task_type: TaskType::Test
        }]
    );
    assert_eq!(
        problems(vec![
            node("a", "implement", "coder", &["ghost"]),
            node("a", "review", "reviewer", &[]),
            node("Bad Key", "review", "reviewer", &[]),
        ]),
        [
            Problem::DuplicateKey { key: "a".into() },
            Problem::BadKey {
                key: "Bad Key".into()
            },
            Problem::UnknownDependency {
                key: "a".into(),
                dependency: "ghost".into()
            },
        ]
    );
    let oversized: Vec<Node> = (0..11)
        .map(|i| node(&format!("n{i}"), "review", "reviewer", &[]))
        .collect();
    assert_eq!(
        problems(oversized),
        [Problem::TooLarge { nodes: 11, max: 10 }]
    );
    // Six coder tasks at $0.20 each: $1.20 against a $1.00 bound.
    let expensive = Plan {
        summary: String::new(),
        nodes: (0..6)
            .map(|i| node(&format!("n{i}"), "implement", "coder", &[]))
            .collect(),
    };
    let bounded = Catalog {
        max_cost_micro_usd: 1_000_000,
        ..catalog()
    };
    let err = validate(&expensive, &bounded).unwrap_err();
    assert_eq!(
        err.problems,
        [Problem::OverBudget {
            estimate_micro_usd: 1_200_000,
            max_micro_usd: 1_000_000
        }]
    );
    assert!(err.to_string().contains("$1.20"), "{err}");
    assert_eq!(problems(Vec::new()), [Problem::Empty]);
}

const GOOD_PLAN: &str = r#"{"summary": "two endpoints in parallel",
  "nodes": [
    {"key": "users", "task_type": "implement", "profile": "coder", "prompt": "Add the users endpoint"},
    {"key": "teams", "task_type": "implement", "profile": "coder", "prompt": "Add the teams endpoint"},
    {"key": "test", "task_type": "test", "profile": "tester", "prompt": "Test both", "depends_on": ["users", "teams"]},
    {"key": "review", "task_type": "review", "profile": "reviewer", "prompt": "Review", "depends_on": ["test"]}
  ]}"#;

async fn model(answer: &str) -> ScriptedLlm {
    ScriptedLlm::start(Script {
        final_text: answer.to_owned(),
        ..Script::default()
    })
    .await
    .unwrap()
}

fn llm_planner(llm: &ScriptedLlm) -> LlmPlanner {
    LlmPlanner::new(
        llm.base_url(),
        Secret::new("gdst_session-token".to_owned()),
        "gpt-test",
    )
}

#[tokio::test]
async fn the_llm_planner_asks_the_model_and_its_plan_is_validated() {
    let llm = model(&format!("```json\n{GOOD_PLAN}\n```")).await;
    let planner = llm_planner(&llm);
    let planned = plan_intent(Some(&planner), "Add users and teams endpoints", &catalog())
        .await
        .unwrap();
    assert_eq!(planned.planner, "llm");
    assert_eq!(planned.fallback_reason, None);
    assert_eq!(
        planned.plan.layers(),
        vec![vec!["users", "teams"], vec!["test"], vec!["review"]]
    );
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.credential(), Some("gdst_session-token"));
    assert_eq!(sent.body["model"], "gpt-test");
    let system = sent.body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("- tester (handles: test)"), "{system}");
    assert_eq!(
        sent.body["messages"][1]["content"],
        "Add users and teams endpoints"
    );
}

#[tokio::test]
async fn a_failing_llm_planner_falls_back_and_says_why() {
    let request = "Add CRUD endpoints for users, teams and projects";
    let deterministic = plan_intent(Some(&Deterministic), request, &catalog())
        .await
        .unwrap();
    for (answer, reason) in [
        (
            "I would start by looking at the code.",
            "not valid plan JSON",
        ),
        (
            r#"{"nodes":[{"key":"a","task_type":"implement","profile":"coder","prompt":"x","depends_on":["a"]}]}"#,
            "cycle",
        ),
        (
            r#"{"nodes":[{"key":"a","task_type":"deploy","profile":"coder","prompt":"x"}]}"#,
            "unknown type `deploy`",
        ),
    ] {
        let llm = model(answer).await;
        let planner = llm_planner(&llm);
        let planned = plan_intent(Some(&planner), request, &catalog())
            .await
            .unwrap();
        assert_eq!(planned.planner, "deterministic", "{answer}");
        let why = planned.fallback_reason.unwrap();
        assert!(why.starts_with("the llm planner failed"), "{why}");
        assert!(why.contains(reason), "{why}");
        assert_eq!(planned.plan, deterministic.plan);
    }
    // The model refusing (the proxy's 402 for a spent budget, say) falls back too.
    let llm = model(GOOD_PLAN).await;
    llm.fail_with(Some(402));
    let planned = plan_intent(Some(&llm_planner(&llm)), request, &catalog())
        .await
        .unwrap();
    assert!(
        planned.fallback_reason.unwrap().contains("402"),
        "the status is named"
    );
    // And nobody listening.
    let gone = LlmPlanner::new(
        "http://127.0.0.1:9",
        Secret::new("t".to_owned()),
        "gpt-test",
    );
    let planned = plan_intent(Some(&gone), request, &catalog()).await.unwrap();
    assert!(planned.fallback_reason.unwrap().contains("cannot reach"));
    // The deterministic planner itself is used as is.
    assert_eq!(Deterministic.name(), "deterministic");
}
