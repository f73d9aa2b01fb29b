//! Intents and plans through the gateway: a dry run, a submitted intent, a reviewed
//! and edited plan (checked again), listing, reading with tasks, cancelling, and
//! refusals for callers without the permission or of another team.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::cluster::{Cluster, MEMBER};
use crate::{call, get, problem};

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_are_planned_submitted_and_their_plans_read_and_cancelled() {
    let cluster = Cluster::start().await;
    let (team, other) = (cluster.team("intents").await, cluster.team("others").await);
    let (_, key) = cluster.api_key(&team, MEMBER, &[]).await;
    let (_, reader) = cluster.api_key(&team, &["plans:read"], &[]).await;
    let (_, outsider) = cluster.api_key(&other, MEMBER, &[]).await;
    let gw = cluster.gateway(cluster.gateway_config()).await;
    let intents = gw.url(&format!("/v1/teams/{team}/intents"));
    let plans = gw.url(&format!("/v1/teams/{team}/plans"));

    // A dry run returns the plan and submits nothing.
    let text = "Add input validation to the signup form";
    let response = call(
        Method::POST,
        &intents,
        Some(&key),
        Some(json!({"text": text, "dry_run": true, "planner": "auto"})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let dry: Value = response.json().await.unwrap();
    let intent = dry["intent"].clone();
    assert_eq!(intent["planner"], "deterministic");
    assert!(
        intent["fallbackReason"]
            .as_str()
            .unwrap()
            .contains("no LLM planner"),
        "{dry}"
    );
    let keys: Vec<&str> = intent["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["implement-1", "test", "review"], "{dry}");
    assert!(dry.get("plan").is_none(), "{dry}");
    let listed: Value = get(&plans, Some(&key)).await.json().await.unwrap();
    assert!(
        listed["plans"].as_array().is_none_or(Vec::is_empty),
        "{listed}"
    );

    // Planned and submitted in one call.
    let repository = json!({"url": "/src/signup", "ref": "main", "commit": COMMIT});
    let response = call(
        Method::POST,
        &intents,
        Some(&key),
        Some(json!({"text": text, "repository": repository, "gate": {"command": "make check"}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let submitted: Value = response.json().await.unwrap();
    let first = submitted["plan"]["id"].as_str().unwrap().to_owned();
    assert!(first.starts_with("pln_"), "{submitted}");
    assert_eq!(submitted["tasks"].as_array().unwrap().len(), 3);
    let payload: Value = serde_json::from_str(
        submitted["tasks"][0]["task"]["payloadJson"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["plan"]["base"], COMMIT);
    assert_eq!(payload["gate"]["command"], "make check");
    // Submitting needs a repository.
    let body = problem(
        call(
            Method::POST,
            &intents,
            Some(&key),
            Some(json!({"text": text})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["field"], "repository");

    // The reviewed plan, edited: without the review task.
    let mut reviewed = intent.clone();
    reviewed["nodes"].as_array_mut().unwrap().pop();
    let response = call(
        Method::POST,
        &plans,
        Some(&key),
        Some(json!({"text": text, "repository": repository, "plan": reviewed})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let second: Value = response.json().await.unwrap();
    let second_id = second["plan"]["id"].as_str().unwrap().to_owned();
    assert_eq!(second["plan"]["taskCount"], 2);
    // An edit that makes a cycle is refused, naming it.
    let mut cyclic = intent.clone();
    cyclic["nodes"][0]["dependsOn"] = json!(["review"]);
    let body = problem(
        call(
            Method::POST,
            &plans,
            Some(&key),
            Some(json!({"repository": repository, "plan": cyclic})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("cycle"), "{body}");

    // Listed newest first; one read with its tasks, states and dependencies.
    let listed: Value = get(&plans, Some(&reader)).await.json().await.unwrap();
    let ids: Vec<&str> = listed["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second_id.as_str(), first.as_str()]);
    let response = get(
        &gw.url(&format!("/v1/teams/{team}/plans/{first}")),
        Some(&reader),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["plan"]["id"], first.as_str());
    let tasks = view["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert!(
        tasks.iter().all(|t| t["task"]["state"].is_string()),
        "{view}"
    );
    assert_eq!(
        tasks[2]["dependsOn"][0], tasks[1]["task"]["id"],
        "review waits for test: {view}"
    );
    assert!(view.get("integration").is_some(), "{view}");

    // Cancelling ends it; a reader may not, nor may another team.
    let cancel = gw.url(&format!("/v1/teams/{team}/plans/{second_id}/cancel"));
    let reason = Some(json!({"reason": "changed my mind"}));
    problem(
        call(Method::POST, &cancel, Some(&reader), reason.clone()).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        call(Method::POST, &cancel, Some(&outsider), reason.clone()).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let response = call(Method::POST, &cancel, Some(&key), reason).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cancelled: Value = response.json().await.unwrap();
    assert_ne!(
        cancelled["plan"]["state"], "PLAN_STATE_RUNNING",
        "{cancelled}"
    );

    // Submitting needs `plans:create`; another team's caller reads nothing.
    problem(
        call(
            Method::POST,
            &intents,
            Some(&reader),
            Some(json!({"text": text, "dry_run": true})),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    for path in [
        format!("/v1/teams/{team}/plans"),
        format!("/v1/teams/{team}/plans/{first}"),
    ] {
        let response = get(&gw.url(&path), Some(&outsider)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(!response.text().await.unwrap().contains(&first), "{path}");
    }
}
