//! The gateway over real HTTP against real auth, scheduler, orchestrator and audit
//! services (SQLite, the in-process bus) and Redis for the rate limits.

#![allow(clippy::unwrap_used)]

mod gateway {
    pub mod cluster;
}

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use gateway::cluster::{Cluster, MEMBER};
use godel_cache::{CacheConfig, RedisCache};
use godel_gateway::OnCacheError;
use godel_proto::auth::v1::{Quotas, RevokeApiKeyRequest, SetQuotasRequest};
use godel_test_utils::eventually;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

const PROBLEM: &str = "application/problem+json";

fn http() -> Client {
    Client::builder().build().unwrap()
}

async fn call(
    method: Method,
    url: &str,
    credential: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut request = http().request(method, url);
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn get(url: &str, credential: Option<&str>) -> Response {
    call(Method::GET, url, credential, None).await
}

/// Asserts `response` is a problem document with `status` and returns its body.
async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "{:?}", response.headers());
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        PROBLEM
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:godel:problem:")
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_credential_get_401_problems() {
    let cluster = Cluster::start().await;
    let gw = cluster.gateway(cluster.gateway_config()).await;
    let me = gw.url("/v1/me");

    let body = problem(get(&me, None).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(body["instance"], "/v1/me");
    for bad in ["not.a.jwt", "eyJhbGciOiJub25lIn0.e30.", "gdl_unknown_key"] {
        let body = problem(get(&me, Some(bad)).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["code"], "unauthenticated", "{bad}");
    }
    let basic = http()
        .get(&me)
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    problem(basic, StatusCode::UNAUTHORIZED).await;

    // Unknown routes and methods are problems too; the request id and trace come back.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = http()
        .get(gw.url("/v1/nowhere"))
        .header("x-request-id", "req-123")
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let back = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(back.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{back}");
    problem(response, StatusCode::NOT_FOUND).await;
    let response = call(Method::DELETE, &gw.url("/v1/openapi.json"), None, None).await;
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    let generated = get(&me, None).await;
    assert!(!generated.headers()["x-request-id"].is_empty());
    assert!(generated.headers().contains_key("traceparent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_access_tokens_authenticate_and_keys_are_cached_within_the_ttl() {
    let cluster = Cluster::start().await;
    let team = cluster.team("alpha").await;
    let (key_id, secret) = cluster.api_key(&team, MEMBER, &[]).await;
    let mut cached = cluster.gateway_config();
    cached.api.api_key_cache_ttl = Duration::from_secs(3600);
    let cached = cluster.gateway(cached).await;
    let mut uncached = cluster.gateway_config();
    uncached.api.api_key_cache_ttl = Duration::ZERO;
    let uncached = cluster.gateway(uncached).await;

    for gw in [&cached, &uncached] {
        let response = get(&gw.url("/v1/me"), Some(&secret)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let me: Value = response.json().await.unwrap();
        assert_eq!(me["principal"], key_id.as_str());
        assert_eq!(me["kind"], "api_key");
        assert_eq!(me["team_id"], team.as_str());
        assert!(
            me["permissions"]
                .as_array()
                .unwrap()
                .contains(&json!("tasks:create"))
        );
    }
    // A Godel access token (JWT) is verified locally.
    let token = cluster.token(&secret).await;
    let me: Value = get(&cached.url("/v1/me"), Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["principal"], key_id.as_str());

    // Revoked: the gateway that cached the key's token keeps it for its TTL (the
    // documented bound); one without the cache refuses it at once.
    cluster
        .auth_as(&cluster.admin_key)
        .await
        .revoke_api_key(RevokeApiKeyRequest {
            team_id: team.clone(),
            key_id: key_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        get(&cached.url("/v1/me"), Some(&secret)).await.status(),
        StatusCode::OK
    );
    problem(
        get(&uncached.url("/v1/me"), Some(&secret)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

/// Every team-scoped route with `{team_id}` and the other ids filled in.
fn team_routes(team: &str, task: &str, session: &str) -> Vec<(Method, String)> {
    godel_gateway::ROUTES
        .iter()
        .filter(|(_, path, _)| path.contains("{team_id}"))
        .map(|(method, path, _)| {
            let path = path
                .replace("{team_id}", team)
                .replace("{task_id}", task)
                .replace("{session_id}", session);
            (Method::from_bytes(method.as_bytes()).unwrap(), path)
        })
        .collect()
}

fn body_for(method: &Method, path: &str) -> Option<Value> {
    if *method != Method::POST {
        return None;
    }
    Some(if path.ends_with("/tasks") {
        json!({"task_type": "code.fix", "payload": {"secret": "team-a-only"}})
    } else {
        json!({"reason": "isolation test"})
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_team_b_gets_no_data_from_team_a() {
    let cluster = Cluster::start().await;
    let (team_a, team_b) = (cluster.team("team-a").await, cluster.team("team-b").await);
    let (_, key_a) = cluster.api_key(&team_a, MEMBER, &[]).await;
    let (_, key_b) = cluster.api_key(&team_b, MEMBER, &[]).await;
    let gw = cluster.gateway(cluster.gateway_config()).await;

    // Team A has a task.
    let submitted = call(
        Method::POST,
        &gw.url(&format!("/v1/teams/{team_a}/tasks")),
        Some(&key_a),
        body_for(&Method::POST, "/tasks"),
    )
    .await;
    assert_eq!(submitted.status(), StatusCode::CREATED);
    let submitted: Value = submitted.json().await.unwrap();
    let task = submitted["task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(submitted["task"]["teamId"], team_a.as_str());
    let got: Value = get(
        &gw.url(&format!("/v1/teams/{team_a}/tasks/{task}")),
        Some(&key_a),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(got["task"]["id"], task.as_str());
    let session = godel_types::SessionId::new().to_string();

    let routes = team_routes(&team_a, &task, &session);
    assert!(routes.len() >= 9, "{routes:?}");
    for (method, path) in routes {
        let response = call(
            method.clone(),
            &gw.url(&path),
            Some(&key_b),
            body_for(&method, &path),
        )
        .await;
        let status = response.status();
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{method} {path}: {status}"
        );
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("team-a-only") && !text.contains("\"task\""),
            "{method} {path}: {text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(
            body["code"] == "permission_denied" || body["code"] == "not_found",
            "{text}"
        );
    }
    // Team A's task is untouched by B's cancel attempt.
    let got: Value = get(
        &gw.url(&format!("/v1/teams/{team_a}/tasks/{task}")),
        Some(&key_a),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_ne!(got["task"]["state"], "TASK_STATE_CANCELLED");
    // Bodies above `api.max_body_bytes` (1 MiB) are refused with a problem.
    let huge = json!({"task_type": "code.fix", "payload": {"blob": "a".repeat(1_100_000)}});
    let response = call(
        Method::POST,
        &gw.url(&format!("/v1/teams/{team_a}/tasks")),
        Some(&key_a),
        Some(huge),
    )
    .await;
    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    // B still works in its own team.
    let listed = get(&gw.url(&format!("/v1/teams/{team_b}/tasks")), Some(&key_b)).await;
    assert_eq!(listed.status(), StatusCode::OK);
}

/// How many of `n` requests of `credential`, spread over `gateways`, were allowed.
async fn allowed(gateways: &[&gateway::cluster::Gateway], credential: &str, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        let response = get(
            &gateways[i % gateways.len()].url("/v1/me"),
            Some(credential),
        )
        .await;
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let headers = response.headers().clone();
                assert!(
                    headers["retry-after"]
                        .to_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                        >= 1
                );
                assert_eq!(headers["ratelimit-remaining"], "0");
                assert!(headers.contains_key("ratelimit-limit"));
                assert!(headers.contains_key("ratelimit-reset"));
                let body = problem(response, StatusCode::TOO_MANY_REQUESTS).await;
                assert_eq!(body["code"], "resource_exhausted");
            }
            other => panic!("unexpected {other}"),
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_shared_by_two_gateways_and_per_principal() {
    let cluster = Cluster::start().await;
    let team = cluster.team("limited").await;
    let (_, heavy) = cluster.api_key(&team, MEMBER, &[]).await;
    let (_, light) = cluster.api_key(&team, MEMBER, &[]).await;
    let (special_id, special) = cluster.api_key(&team, MEMBER, &[]).await;
    let mut config = cluster.gateway_config();
    config.rate_limit.per_minute = 20;
    config.rate_limit.api_keys.insert(special_id, 7);
    let one = cluster.gateway(config.clone()).await;
    let two = cluster.gateway(config).await;

    let first = get(&one.url("/v1/me"), Some(&light)).await;
    assert_eq!(first.headers()["ratelimit-limit"], "20");
    assert_eq!(first.headers()["ratelimit-remaining"], "19");

    // 20 per minute: one more may trickle in while the 50 requests run.
    let heavy_ok = allowed(&[&one, &two], &heavy, 50).await;
    assert!((20..=21).contains(&heavy_ok), "allowed {heavy_ok} of 50");
    // Another principal is unaffected.
    assert_eq!(allowed(&[&one, &two], &light, 5).await, 5);
    // A per-key override.
    let special_ok = allowed(&[&one, &two], &special, 15).await;
    assert!((7..=8).contains(&special_ok), "allowed {special_ok} of 15");

    // A team quota in auth overrides the default.
    let quota_team = cluster.team("quota").await;
    cluster
        .auth_as(&cluster.admin_key)
        .await
        .set_quotas(SetQuotasRequest {
            quotas: Some(Quotas {
                team_id: quota_team.clone(),
                rate_limit_per_minute: Some(4),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let (_, quota_key) = cluster.api_key(&quota_team, MEMBER, &[]).await;
    let response = get(&one.url("/v1/me"), Some(&quota_key)).await;
    assert_eq!(response.headers()["ratelimit-limit"], "4");
    let quota_ok = allowed(&[&one, &two], &quota_key, 10).await;
    assert!((3..=4).contains(&quota_ok), "allowed {quota_ok} more of 10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_is_down_the_gateway_fails_open_or_closed_as_configured() {
    let cluster = Cluster::start().await;
    let team = cluster.team("outage").await;
    let (_, key) = cluster.api_key(&team, MEMBER, &[]).await;
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let down = || {
        let mut config = CacheConfig::redis(format!("redis://{closed}"), "down");
        config.connect_timeout = Duration::from_millis(200);
        Arc::new(RedisCache::new(&config).unwrap())
    };

    let mut open = cluster.gateway_config();
    open.rate_limit.per_minute = 3;
    open.rate_limit.on_cache_error = OnCacheError::FailOpen;
    let open = cluster.gateway_with(open, down()).await;
    // Limited in process: still 3 per minute on this replica.
    assert_eq!(allowed(&[&open], &key, 6).await, 3);

    let mut closed_config = cluster.gateway_config();
    closed_config.rate_limit.on_cache_error = OnCacheError::FailClosed;
    let shut = cluster.gateway_with(closed_config, down()).await;
    let body = problem(
        get(&shut.url("/v1/me"), Some(&key)).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(body["code"], "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_produces_an_audit_record() {
    let cluster = Cluster::start().await;
    let team = cluster.team("audited").await;
    let other = cluster.team("other").await;
    let (key_id, key) = cluster.api_key(&team, MEMBER, &[]).await;
    let (_, outsider) = cluster.api_key(&other, MEMBER, &[]).await;
    let gw = cluster.gateway(cluster.audited_config().await).await;

    // (traceparent trace id, request, expected action, outcome, HTTP status)
    let calls = [
        (
            "1".repeat(32),
            Method::POST,
            format!("/v1/teams/{team}/tasks"),
            Some(&key),
            "task.submit",
            "OUTCOME_SUCCESS",
            201,
        ),
        (
            "2".repeat(32),
            Method::GET,
            format!("/v1/teams/{team}/tasks"),
            Some(&key),
            "task.list",
            "OUTCOME_SUCCESS",
            200,
        ),
        (
            "3".repeat(32),
            Method::GET,
            format!("/v1/teams/{team}/tasks"),
            Some(&outsider),
            "task.list",
            "OUTCOME_DENIED",
            403,
        ),
        (
            "4".repeat(32),
            Method::GET,
            format!("/v1/teams/{team}/tasks"),
            None,
            "task.list",
            "OUTCOME_DENIED",
            401,
        ),
        (
            "5".repeat(32),
            Method::GET,
            format!("/v1/teams/{team}/tasks/tsk_missing"),
            Some(&key),
            "task.get",
            "OUTCOME_FAILURE",
            404,
        ),
    ];
    for (trace, method, path, credential, ..) in &calls {
        let mut request = http()
            .request(method.clone(), gw.url(path))
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        if *method == Method::POST {
            request = request.json(&json!({"task_type": "review"}));
        }
        request.send().await.unwrap();
    }

    // Read back through the gateway's own audit route.
    let wanted: BTreeSet<String> = calls.iter().map(|c| c.0.clone()).collect();
    let records = eventually(
        "every call is in the audit log",
        Duration::from_secs(20),
        || {
            let url = gw.url(&format!("/v1/teams/{team}/audit/records?page_size=100"));
            let key = key.clone();
            let wanted = wanted.clone();
            async move {
                let response = get(&url, Some(&key)).await;
                let body: Value = response.json().await.ok()?;
                let records = body["records"].as_array()?.clone();
                let traces: BTreeSet<String> = records
                    .iter()
                    .filter_map(|r| r["traceId"].as_str().map(str::to_owned))
                    .collect();
                wanted.is_subset(&traces).then_some(records)
            }
        },
    )
    .await;
    for (trace, _, path, credential, action, outcome, status) in &calls {
        let record = records
            .iter()
            .find(|r| r["traceId"] == trace.as_str())
            .unwrap();
        assert_eq!(record["action"], *action, "{record}");
        assert_eq!(record["outcome"], *outcome, "{record}");
        assert_eq!(record["resource"], path.as_str());
        assert_eq!(record["teamId"], team.as_str());
        assert_eq!(record["clientIp"], "127.0.0.1");
        let details: Value = serde_json::from_str(record["detailsJson"].as_str().unwrap()).unwrap();
        assert_eq!(details["http_status"], *status);
        if credential.as_deref() == Some(&key) {
            assert_eq!(record["actor"]["subjectId"], key_id.as_str());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_3_1_and_lists_every_route() {
    let cluster = Cluster::start().await;
    let gw = cluster.gateway(cluster.gateway_config()).await;
    let response = get(&gw.url("/v1/openapi.json"), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    let mut served: BTreeSet<(String, String)> = godel_gateway::ROUTES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    served.insert(("GET".to_owned(), "/v1/openapi.json".to_owned()));
    assert_eq!(documented, served);

    // Every documented operation is served: without a credential each answers 401
    // from the authentication step (not 404/405 from routing).
    for (method, path) in &documented {
        if path == "/v1/openapi.json" {
            continue;
        }
        let concrete = path
            .replace("{team_id}", "team_x")
            .replace("{task_id}", "tsk_x")
            .replace("{session_id}", "ses_x");
        let response = call(
            Method::from_bytes(method.as_bytes()).unwrap(),
            &gw.url(&concrete),
            None,
            None,
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    assert_eq!(
        godel_gateway::openapi().paths.paths.len(),
        doc["paths"].as_object().unwrap().len()
    );

    // The document validates as OpenAPI 3.1 (openapi-spec-validator from PyPI).
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&doc).unwrap()).unwrap();
    // `scripts/test.sh` sets TEST_PYTHON to an interpreter that has the validator.
    let python = std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = std::process::Command::new(&python)
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.validation import OpenAPIV31SpecValidator\n\
             validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)",
        ])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("{python} runs (openapi-spec-validator must be installed): {e}")
        });
    assert!(
        output.status.success(),
        "openapi-spec-validator: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
