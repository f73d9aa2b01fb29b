//! The gateway over real HTTP against real auth, scheduler, orchestrator and audit
//! services (SQLite, the in-process bus) and Redis for the rate limits.

#![allow(clippy::unwrap_used)]

mod gateway {
    pub mod cluster;
    pub mod login;
    pub mod matrix;
    mod plans;
    pub mod sse;
}

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use gateway::cluster::{Cluster, MEMBER};
use gateway::matrix::{self, Ids, Need};
use gateway::sse::EventStream;
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

/// Every team-scoped route with its path filled from `ids`, and its body.
fn team_routes(ids: &Ids) -> Vec<(Method, String, Option<Value>)> {
    godel_gateway::ROUTES
        .iter()
        .filter(|(_, path, _)| path.contains("{team_id}"))
        .map(|(method, path, _)| {
            (
                Method::from_bytes(method.as_bytes()).unwrap(),
                ids.fill(path),
                matrix::body(method, path),
            )
        })
        .collect()
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
        matrix::body("POST", "/v1/teams/{team_id}/tasks"),
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
    let ids = Ids {
        task: task.clone(),
        ..Ids::unknown(&team_a)
    };

    // Every team-scoped route the router serves (a new one without a matrix entry
    // fails here: see tests/gateway/matrix.rs).
    let routes = team_routes(&ids);
    assert!(routes.len() >= 35, "{routes:?}");
    for (method, path, body) in routes {
        let response = call(method.clone(), &gw.url(&path), Some(&key_b), body).await;
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
    // Limited in process: still 3 per minute on this replica, and it stays ready.
    assert_eq!(allowed(&[&open], &key, 6).await, 3);
    assert_eq!(
        get(&open.url("/readyz"), None).await.status(),
        StatusCode::OK
    );

    let mut closed_config = cluster.gateway_config();
    closed_config.rate_limit.on_cache_error = OnCacheError::FailClosed;
    let shut = cluster.gateway_with(closed_config, down()).await;
    let body = problem(
        get(&shut.url("/v1/me"), Some(&key)).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(body["code"], "unavailable");
    // Failing closed, it is not ready either: the load balancer sends elsewhere.
    assert_eq!(
        get(&shut.url("/readyz"), None).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// Too many failed authentications from one address: its API keys are refused with
/// 429 without asking auth, while other addresses and access tokens carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_address() {
    let cluster = Cluster::start().await;
    let team = cluster.team("guessing").await;
    let (_, key) = cluster.api_key(&team, MEMBER, &[]).await;
    let token = cluster.token(&key).await;
    let mut config = cluster.gateway_config();
    config.rate_limit.failed_auth_per_minute = 3;
    config.api.trust_forwarded_for = true;
    let gw = cluster.gateway(config).await;
    let from = |address: &'static str, credential: String| {
        let url = gw.url("/v1/me");
        async move {
            http()
                .get(url)
                .bearer_auth(credential)
                .header("x-forwarded-for", address)
                .send()
                .await
                .unwrap()
        }
    };
    let guess = |n: usize| format!("gdl_key_{n:032}_{}", "0".repeat(43));

    let mut statuses = Vec::new();
    for n in 0..6 {
        statuses.push(from("203.0.113.7", guess(n)).await.status().as_u16());
    }
    assert_eq!(statuses[..3], [401, 401, 401], "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");
    let refused = from("203.0.113.7", key.clone()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    // An access token is verified locally: it still works from that address.
    assert_eq!(from("203.0.113.7", token).await.status(), StatusCode::OK);
    // Another address is unaffected.
    assert_eq!(from("198.51.100.9", key).await.status(), StatusCode::OK);
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
        let concrete = Ids::unknown("team_x").fill(path);
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

/// The permissions of each role the matrix tries, by name.
fn role_permissions(name: &str) -> Vec<String> {
    let role = godel_identity::BuiltinRole::from_name(name).unwrap();
    role.permissions()
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_is_allowed_exactly_the_routes_its_permissions_name() {
    let cluster = Cluster::start().await;
    let team = cluster.team("roles").await;
    let gw = cluster.gateway(cluster.gateway_config()).await;
    let admin = cluster.admin_key.clone();

    // A custom role, created through the gateway; a key holds what it grants.
    let custom = ["dlq:manage", "quotas:read", "audit:read", "sessions:read"];
    let created = call(
        Method::POST,
        &gw.url(&format!("/v1/teams/{team}/roles")),
        Some(&admin),
        Some(json!({"name": "dlq-operator", "permissions": custom})),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let custom: Vec<String> = created["role"]["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(custom.len(), 4, "{created}");

    // Each role as a principal holding exactly its permissions in the team; the
    // org-admin is the bootstrap key (another team's, org-admin everywhere).
    let mut principals = vec![("org-admin", admin.clone(), Vec::new())];
    for role in ["team-admin", "developer", "viewer", "auditor"] {
        let permissions = role_permissions(role);
        let names: Vec<&str> = permissions.iter().map(String::as_str).collect();
        let (_, key) = cluster.api_key(&team, &names, &[]).await;
        principals.push((role, key, permissions));
    }
    let names: Vec<&str> = custom.iter().map(String::as_str).collect();
    let (_, key) = cluster.api_key(&team, &names, &[]).await;
    principals.push(("custom", key, custom.clone()));

    let submitted: Value = call(
        Method::POST,
        &gw.url(&format!("/v1/teams/{team}/tasks")),
        Some(&admin),
        matrix::body("POST", "/v1/teams/{team_id}/tasks"),
    )
    .await
    .json()
    .await
    .unwrap();
    let ids = Ids {
        task: submitted["task"]["id"].as_str().unwrap().to_owned(),
        ..Ids::unknown(&team)
    };

    let mut checked = 0;
    for (method, template, _) in godel_gateway::ROUTES {
        let need = matrix::need(method, template);
        for (role, key, permissions) in &principals {
            let allowed = match need {
                Need::Any => true,
                Need::OrgAdmin => *role == "org-admin",
                Need::Permission(p) => *role == "org-admin" || permissions.iter().any(|h| h == p),
            };
            let response = call(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &gw.url(&ids.fill(template)),
                Some(key),
                matrix::body(method, template),
            )
            .await;
            let status = response.status();
            if allowed {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{role} should be allowed {method} {template} ({need:?}): {status} {}",
                    response.text().await.unwrap_or_default()
                );
            } else {
                let body = problem(response, StatusCode::FORBIDDEN).await;
                assert_eq!(
                    body["code"], "permission_denied",
                    "{role} {method} {template}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, godel_gateway::ROUTES.len() * 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stream_resumes_after_its_last_event_and_ends_after_the_terminal_one() {
    use godel_proto::scheduler::v1 as pb;

    let cluster = Cluster::start().await;
    let team = cluster.team("streams").await;
    let (_, key) = cluster.api_key(&team, MEMBER, &[]).await;
    let mut config = cluster.gateway_config();
    config.api.sse_keep_alive = Duration::from_millis(100);
    let gw = cluster.gateway(config).await;
    let submitted: Value = call(
        Method::POST,
        &gw.url(&format!("/v1/teams/{team}/tasks")),
        Some(&key),
        matrix::body("POST", "/v1/teams/{team_id}/tasks"),
    )
    .await
    .json()
    .await
    .unwrap();
    let task = submitted["task"]["id"].as_str().unwrap().to_owned();
    let events_url = gw.url(&format!("/v1/teams/{team}/tasks/{task}/events"));
    let open = |last: Option<u64>| {
        let mut request = http().get(&events_url).bearer_auth(&key);
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        async move { EventStream::new(request.send().await.unwrap()) }
    };

    // A new stream: the current state first, then keep-alive comments while idle.
    let mut live = open(None).await;
    let snapshot = live.next().await.unwrap();
    assert_eq!(snapshot.event.as_deref(), Some("snapshot"));
    assert_eq!(snapshot.json()["task"]["state"], "TASK_STATE_QUEUED");
    assert!(snapshot.id.is_some(), "{snapshot:?}");
    assert!(live.next().await.unwrap().comment);

    // An orchestrator takes the task, runs it and completes it.
    let mut scheduler = pb::scheduler_service_client::SchedulerServiceClient::connect(format!(
        "http://{}",
        cluster.scheduler.grpc_addr()
    ))
    .await
    .unwrap();
    let orchestrator = godel_types::OrchestratorId::new().to_string();
    scheduler
        .register_orchestrator(pb::RegisterOrchestratorRequest {
            orchestrator_id: orchestrator.clone(),
            capacity: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let epoch = eventually("the task is leased", Duration::from_secs(20), || {
        let mut scheduler = scheduler.clone();
        let (orchestrator, team, task) = (orchestrator.clone(), team.clone(), task.clone());
        async move {
            scheduler
                .lease_tasks(pb::LeaseTasksRequest {
                    orchestrator_id: orchestrator,
                    max_tasks: 1,
                })
                .await
                .ok()?;
            let task = scheduler
                .get_task(pb::GetTaskRequest {
                    team_id: team,
                    task_id: task,
                })
                .await
                .ok()?
                .into_inner()
                .task?;
            (task.state() == pb::TaskState::Leased).then_some(task.epoch)
        }
    })
    .await;
    let leased = live.next_event().await.unwrap();
    assert_eq!(leased.json()["kind"], "task.leased", "{leased:?}");
    assert!(leased.id() > snapshot.id());
    assert_eq!(leased.json()["event"]["taskId"], task.as_str());
    scheduler
        .heartbeat_lease(pb::HeartbeatLeaseRequest {
            orchestrator_id: orchestrator.clone(),
            task_id: task.clone(),
            epoch,
        })
        .await
        .unwrap();
    let running = live.next_event().await.unwrap();
    assert_eq!(running.json()["kind"], "task.running", "{running:?}");
    scheduler
        .complete_task(pb::CompleteTaskRequest {
            orchestrator_id: orchestrator,
            task_id: task.clone(),
            epoch,
            result_json: "{}".to_owned(),
        })
        .await
        .unwrap();
    let succeeded = live.next_event().await.unwrap();
    assert_eq!(succeeded.json()["kind"], "task.succeeded", "{succeeded:?}");
    assert_eq!(succeeded.json()["event"]["toState"], "TASK_STATE_SUCCEEDED");
    // The terminal state ends the stream.
    let end = live.next_event().await.unwrap();
    assert_eq!(end.event.as_deref(), Some("end"));
    assert!(live.next().await.is_none());

    // Resumed after the lease: the current state, then exactly what came after.
    let mut resumed = open(Some(leased.id())).await;
    let snapshot = resumed.next_event().await.unwrap();
    assert_eq!(snapshot.event.as_deref(), Some("snapshot"));
    assert_eq!(snapshot.json()["task"]["state"], "TASK_STATE_SUCCEEDED");
    assert!(
        snapshot.id.is_none(),
        "a resumed snapshot keeps the position"
    );
    let after: Vec<(u64, String)> = [
        resumed.next_event().await.unwrap(),
        resumed.next_event().await.unwrap(),
    ]
    .iter()
    .map(|f| (f.id(), f.json()["kind"].as_str().unwrap().to_owned()))
    .collect();
    assert_eq!(
        after,
        [
            (running.id(), "task.running".to_owned()),
            (succeeded.id(), "task.succeeded".to_owned())
        ]
    );
    assert_eq!(
        resumed.next_event().await.unwrap().event.as_deref(),
        Some("end")
    );
    assert!(resumed.next().await.is_none());

    // A new stream of a finished task: its state, then the end.
    let mut finished = open(None).await;
    assert_eq!(
        finished.next_event().await.unwrap().json()["task"]["state"],
        "TASK_STATE_SUCCEEDED"
    );
    assert_eq!(
        finished.next_event().await.unwrap().event.as_deref(),
        Some("end")
    );
    assert!(finished.next().await.is_none());

    // A Last-Event-ID that is not one of ours, and unknown tasks, are problems.
    let bad = http()
        .get(&events_url)
        .bearer_auth(&key)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    problem(bad, StatusCode::BAD_REQUEST).await;
    let missing = get(
        &gw.url(&format!(
            "/v1/teams/{team}/tasks/{}/events",
            godel_types::TaskId::new()
        )),
        Some(&key),
    )
    .await;
    problem(missing, StatusCode::NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_and_its_assets_load_from_the_gateway() {
    let cluster = Cluster::start().await;
    let gw = cluster.gateway(cluster.gateway_config()).await;
    let page = get(&gw.url("/v1/docs"), None).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    // Every script and stylesheet is the gateway's own: no CDN.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    for (asset, kind, min_len) in [
        (
            "/v1/docs/swagger-ui-bundle.js",
            "text/javascript",
            1_000_000,
        ),
        ("/v1/docs/swagger-ui.css", "text/css", 100_000),
        ("/v1/docs/init.js", "text/javascript", 100),
    ] {
        assert!(html.contains(asset), "the page loads {asset}");
        let response = get(&gw.url(asset), None).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{asset}"
        );
        let body = response.text().await.unwrap();
        assert!(body.len() >= min_len, "{asset}: {} bytes", body.len());
        if asset.ends_with("init.js") {
            assert!(body.contains("\"/v1/openapi.json\""), "{body}");
        }
    }
    // The page points at a document that is served.
    assert_eq!(
        get(&gw.url("/v1/openapi.json"), None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_stream_sends_its_state_then_its_events_until_it_ends() {
    let cluster = Cluster::start().await;
    let team = cluster.team("plan-streams").await;
    let (_, key) = cluster
        .api_key(&team, &["plans:create", "plans:cancel", "plans:read"], &[])
        .await;
    let (_, blind) = cluster.api_key(&team, &["tasks:read"], &[]).await;
    let gw = cluster.gateway(cluster.gateway_config()).await;
    let repository =
        json!({"url": "/src/app", "commit": "0123456789abcdef0123456789abcdef01234567"});
    let submitted = call(
        Method::POST,
        &gw.url(&format!("/v1/teams/{team}/intents")),
        Some(&key),
        Some(json!({"text": "Add a health endpoint", "repository": repository})),
    )
    .await;
    assert_eq!(submitted.status(), StatusCode::CREATED);
    let submitted: Value = submitted.json().await.unwrap();
    let plan = submitted["plan"]["id"].as_str().unwrap().to_owned();
    let events_url = gw.url(&format!("/v1/teams/{team}/plans/{plan}/events"));

    // `plans:read` is what a plan's stream needs.
    problem(get(&events_url, Some(&blind)).await, StatusCode::FORBIDDEN).await;

    let mut live = EventStream::new(get(&events_url, Some(&key)).await);
    let snapshot = live.next_event().await.unwrap();
    assert_eq!(snapshot.event.as_deref(), Some("snapshot"));
    assert_eq!(snapshot.json()["plan"]["id"], plan.as_str());
    assert_eq!(snapshot.json()["plan"]["state"], "PLAN_STATE_RUNNING");

    let cancelled = call(
        Method::POST,
        &gw.url(&format!("/v1/teams/{team}/plans/{plan}/cancel")),
        Some(&key),
        Some(json!({"reason": "stream test"})),
    )
    .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let event = live.next_event().await.unwrap();
    assert_eq!(event.json()["kind"], "plan.cancelled", "{event:?}");
    assert_eq!(event.json()["event"]["planId"], plan.as_str());
    assert!(event.id() > snapshot.id());
    assert_eq!(
        live.next_event().await.unwrap().event.as_deref(),
        Some("end")
    );
    assert!(live.next().await.is_none());

    // Resumed from the snapshot: the state now, then exactly the event after it.
    let resumed = http()
        .get(&events_url)
        .bearer_auth(&key)
        .header("last-event-id", snapshot.id().to_string())
        .send()
        .await
        .unwrap();
    let mut resumed = EventStream::new(resumed);
    let now = resumed.next_event().await.unwrap();
    assert_eq!(now.json()["plan"]["state"], "PLAN_STATE_CANCELLED");
    let again = resumed.next_event().await.unwrap();
    assert_eq!(
        (again.id(), again.json()["kind"].clone()),
        (event.id(), json!("plan.cancelled"))
    );
    assert_eq!(
        resumed.next_event().await.unwrap().event.as_deref(),
        Some("end")
    );
    assert!(resumed.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stream_relays_its_log_resumes_by_offset_and_ends_with_the_session() {
    use godel_proto::orchestrator::v1 as pb;
    use godel_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;

    let cluster = Cluster::start().await;
    let team = cluster.team("session-streams").await;
    let (_, key) = cluster.api_key(&team, MEMBER, &[]).await;
    let (_, blind) = cluster.api_key(&team, &["tasks:read"], &[]).await;
    let gw = cluster.gateway(cluster.gateway_config()).await;

    // A session whose workspace cannot be prepared: it fails at once, leaving a log.
    let channel = tonic::transport::Channel::from_shared(format!(
        "http://{}",
        cluster.orchestrator.grpc_addr()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let token = cluster.token(&key).await;
    let mut orchestrator = OrchestratorServiceClient::with_interceptor(
        channel,
        godel_identity::BearerInterceptor::new(&token).unwrap(),
    );
    // A clone URL where nothing listens (a port that was free a moment ago).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let session = orchestrator
        .start_session(pb::StartSessionRequest {
            task_id: godel_types::TaskId::new().to_string(),
            epoch: 1,
            team_id: team.clone(),
            adapter: "sim".to_owned(),
            repository: Some(pb::Repository {
                url: format!("http://{closed}/nothing.git"),
                ..Default::default()
            }),
            prompt: "edit some files".to_owned(),
            task_type: "code.edit".to_owned(),
            payload_json: "{}".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .id;
    let events_url = gw.url(&format!("/v1/teams/{team}/sessions/{session}/events"));
    problem(get(&events_url, Some(&blind)).await, StatusCode::FORBIDDEN).await;

    // The whole log, in order, then the end.
    let mut stream = EventStream::new(get(&events_url, Some(&key)).await);
    let mut log = Vec::new();
    let end = loop {
        let frame = stream.next_event().await.unwrap();
        if frame.id.is_none() {
            break frame;
        }
        log.push(frame);
    };
    assert_eq!(end.event.as_deref(), Some("end"), "{end:?}");
    assert!(stream.next().await.is_none());
    let offsets: Vec<u64> = log.iter().map(|f| f.id()).collect();
    assert!(offsets.len() >= 2, "{log:?}");
    assert_eq!(offsets, (1..=offsets.len() as u64).collect::<Vec<_>>());
    for frame in &log {
        let data = frame.json();
        assert_eq!(data["offset"], frame.id());
        assert_eq!(data["sessionId"], session.as_str());
        assert!(
            data["kind"].is_string() && data["kind"] != "unknown",
            "{data}"
        );
    }
    let kinds: Vec<Value> = log.iter().map(|f| f.json()["kind"].clone()).collect();
    assert!(kinds.contains(&json!("error")), "{kinds:?}");
    assert!(
        log.iter()
            .any(|f| f.json()["kind"] == "state"
                && f.json()["payload"]["to"] == "SESSION_STATE_FAILED"),
        "{log:?}"
    );

    // Resumed after the first entry: exactly the later ones, then the end.
    let resumed = http()
        .get(&events_url)
        .bearer_auth(&key)
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    let mut resumed = EventStream::new(resumed);
    let mut later = Vec::new();
    loop {
        let frame = resumed.next_event().await.unwrap();
        if frame.id.is_none() {
            assert_eq!(frame.event.as_deref(), Some("end"));
            break;
        }
        later.push(frame.id());
    }
    assert_eq!(later, offsets[1..]);
    assert!(resumed.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_administration_routes_reach_their_services() {
    let cluster = Cluster::start().await;
    let team = cluster.team("admin-routes").await;
    let permissions = role_permissions("team-admin");
    let names: Vec<&str> = permissions.iter().map(String::as_str).collect();
    let (_, admin) = cluster.api_key(&team, &names, &[]).await;
    let gw = cluster.gateway(cluster.gateway_config()).await;
    let url = |path: &str| gw.url(&format!("/v1/teams/{team}{path}"));
    let json_of = |response: Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body)
    };

    // Quotas: replaced as a whole, read back.
    let (status, set) = json_of(
        call(
            Method::PUT,
            &url("/quotas"),
            Some(&admin),
            Some(json!({"max_queued_tasks": 5})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let (_, got) = json_of(get(&url("/quotas"), Some(&admin)).await).await;
    assert_eq!(got["quotas"]["maxQueuedTasks"], 5, "{got}");

    // API keys: the secret once, never in a listing; the key works until revoked.
    let (status, created) = json_of(
        call(
            Method::POST,
            &url("/api-keys"),
            Some(&admin),
            Some(json!({"name": "ci", "permissions": ["tasks:read"]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("gdl_"), "{created}");
    let listing = get(&url("/api-keys"), Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains(&key_id) && !listing.contains(&secret),
        "{listing}"
    );
    assert_eq!(
        get(&gw.url("/v1/me"), Some(&secret)).await.status(),
        StatusCode::OK
    );
    let (status, revoked) = json_of(
        call(
            Method::DELETE,
            &url(&format!("/api-keys/{key_id}")),
            Some(&admin),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["key"]["revokedAt"].is_string(), "{revoked}");

    // Roles and members.
    let (status, role) = json_of(
        call(
            Method::POST,
            &url("/roles"),
            Some(&admin),
            Some(json!({"name": "readers", "permissions": ["tasks:read"]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{role}");
    let (_, roles) = json_of(get(&url("/roles"), Some(&admin)).await).await;
    let role_names: Vec<&str> = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        role_names.contains(&"readers") && role_names.contains(&"developer"),
        "{roles}"
    );
    assert_eq!(
        get(&url("/members"), Some(&admin)).await.status(),
        StatusCode::OK
    );

    // Profiles: put, listed, deleted once.
    let (status, put) = json_of(
        call(
            Method::PUT,
            &url("/profiles/fast-sim"),
            Some(&admin),
            Some(json!({"adapter": "sim", "taskTypes": ["implement"], "preference": 1})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["profile"]["name"], "fast-sim");
    let listing = get(&url("/profiles"), Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    assert!(listing.contains("fast-sim"), "{listing}");
    let profile = url("/profiles/fast-sim");
    let deleted = call(Method::DELETE, &profile, Some(&admin), None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = call(Method::DELETE, &profile, Some(&admin), None).await;
    problem(again, StatusCode::NOT_FOUND).await;

    // Queue statistics and the (empty) dead-letter queue.
    let submitted: Value = call(
        Method::POST,
        &url("/tasks"),
        Some(&admin),
        matrix::body("POST", "/v1/teams/{team_id}/tasks"),
    )
    .await
    .json()
    .await
    .unwrap();
    let task = submitted["task"]["id"].as_str().unwrap().to_owned();
    let (_, stats) = json_of(get(&url("/queue/stats"), Some(&admin)).await).await;
    let queued = stats["counts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["state"] == "TASK_STATE_QUEUED")
        .unwrap();
    assert_eq!(queued["count"], "1", "{stats}");
    let (_, dlq) = json_of(get(&url("/dlq"), Some(&admin)).await).await;
    assert!(
        dlq["deadLetters"].as_array().is_none_or(Vec::is_empty),
        "{dlq}"
    );
    problem(
        get(&url(&format!("/dlq/{task}")), Some(&admin)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let (status, purged) = json_of(
        call(
            Method::POST,
            &url("/dlq/purge"),
            Some(&admin),
            Some(json!({})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
}
