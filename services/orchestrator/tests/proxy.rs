//! The LLM proxy end to end, over SQLite and PostgreSQL: the orchestrator started
//! with `start` (proxy enabled, a local KEK file), provider keys set and rotated
//! through the real gRPC API, and sessions whose agent is a small shell program
//! that writes down the proxy address and session token it was given, then idles.
//! The test calls the proxy as that agent would; upstream is the scripted LLM
//! provider from `godel-test-utils` (a real HTTP server recording what it saw), or
//! a gated server for the unbuffered-streaming check.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use godel_bus::{Bus, ConsumerConfig, MemoryBus, Subject};
use godel_identity::Permission;
use godel_orchestrator::proxy::tokens::{self, Refusal};
use godel_orchestrator::session::{Sessions, Usage};
use godel_orchestrator::{
    CommandAdapter, Dependencies, KeysConfig, LocalKekConfig, Migrator, ModelPrice,
    OrchestratorConfig, ProviderUpstream, ProxyConfig, SessionsConfig,
};
use godel_proto::orchestrator::v1 as pb;
use godel_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use godel_proto::orchestrator::v1::provider_key_service_client::ProviderKeyServiceClient;
use godel_proto::orchestrator::v1::session_event::Body;
use godel_store::sea_orm::{ConnectionTrait, Statement};
use godel_store::{DatabaseConfig, Db, OutboxRelay, RelayConfig};
use godel_test_utils::eventually;
use godel_test_utils::git::init_repo;
use godel_test_utils::identity::{Authed, TestIssuer, authed};
use godel_test_utils::llm::{Script, ScriptedLlm};
use godel_test_utils::postgres::{DbKind, TestDb};
use godel_types::{OrchestratorId, SessionId, TaskId, TeamId};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
const OPENAI_KEY: &str = "sk-openai-real-key-0000000001";
const ANTHROPIC_KEY: &str = "sk-ant-real-key-000000000002";

/// Writes the proxy address and token it was given (and its environment) into its
/// worktree, then idles until stopped.
const AGENT: &str = r#"env > .agent-env
printf '%s\n%s\n' "$GODEL_LLM_BASE_URL" "$GODEL_SESSION_TOKEN" > .llm.tmp
mv .llm.tmp .llm
exec sleep 600"#;

/// Scripted usage per reply, and prices: `upstream-model` (what `catalog-model`
/// maps to) at $2 / $10 and `claude-test` at $3 / $15 per million tokens.
const INPUT: u64 = 100;
const OUTPUT: u64 = 20;
const UPSTREAM_MODEL_COST: u64 = 400;
const CLAUDE_COST: u64 = 600;

fn prices() -> BTreeMap<String, ModelPrice> {
    BTreeMap::from([
        (
            "upstream-model".to_owned(),
            ModelPrice {
                input_micro_usd_per_mtok: 2_000_000,
                output_micro_usd_per_mtok: 10_000_000,
            },
        ),
        (
            "claude-test".to_owned(),
            ModelPrice {
                input_micro_usd_per_mtok: 3_000_000,
                output_micro_usd_per_mtok: 15_000_000,
            },
        ),
    ])
}

struct Harness {
    _bus: Arc<MemoryBus>,
    client: OrchestratorServiceClient<Authed>,
    keys: ProviderKeyServiceClient<Authed>,
    shutdown: CancellationToken,
    running: Option<godel_runtime::RunningService>,
    /// Every payload published on the bus.
    published: Arc<Mutex<Vec<Vec<u8>>>>,
    root: tempfile::TempDir,
    repo: PathBuf,
    team: TeamId,
    db: Db,
    /// Reads usage totals from the same database.
    sessions: Sessions,
    test_db: TestDb,
    http: reqwest::Client,
    issuer: TestIssuer,
}

/// A running session's view of the proxy.
struct Agent {
    id: String,
    base_url: String,
    token: String,
    worktree: PathBuf,
}

/// How a call presents its token.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
    None,
}

impl Harness {
    async fn new(kind: DbKind, upstream: &str) -> Self {
        let test_db = TestDb::of(kind).await;
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        init_repo(&repo);
        let bus = Arc::new(MemoryBus::default());
        let mut consumer = bus
            .consumer(ConsumerConfig::new(
                "test",
                vec![Subject::all_team_events()],
            ))
            .await
            .unwrap();
        let published: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = published.clone();
        tokio::spawn(async move {
            while let Ok(Some(d)) = consumer.next().await {
                sink.lock().unwrap().push(d.payload.to_vec());
                d.ack().await.unwrap();
            }
        });
        let database = DatabaseConfig {
            url: test_db.url.clone().into(),
            schema: test_db.schema.clone(),
            max_connections: 4,
            ..DatabaseConfig::default()
        };
        let sessions_config = SessionsConfig {
            worktrees_dir: root.path().join("worktrees"),
            homes_dir: root.path().join("homes"),
            cache_dir: root.path().join("cache"),
            allow_local_repositories: true,
            interrupt_wait: Duration::from_secs(5),
            term_wait: Duration::from_secs(2),
            commands: BTreeMap::from([(
                "agent".to_owned(),
                CommandAdapter {
                    program: "/bin/sh".into(),
                    args: vec!["-c".into(), AGENT.into()],
                },
            )]),
            default_adapter: "agent".into(),
            ..SessionsConfig::default()
        };
        let upstream = ProviderUpstream {
            base_url: upstream.to_owned(),
        };
        let config = OrchestratorConfig {
            server: godel_runtime::ServerConfig::local(),
            database: database.clone(),
            sessions: sessions_config.clone(),
            proxy: ProxyConfig {
                enabled: true,
                providers: BTreeMap::from([
                    ("openai".to_owned(), upstream.clone()),
                    ("anthropic".to_owned(), upstream),
                ]),
                prices: prices(),
                models: BTreeMap::from([("catalog-model".to_owned(), "upstream-model".to_owned())]),
                ..ProxyConfig::default()
            },
            keys: KeysConfig {
                local: LocalKekConfig {
                    path: root.path().join("kek"),
                    create_if_missing: true,
                },
                ..KeysConfig::default()
            },
            ..OrchestratorConfig::default()
        };
        let shutdown = CancellationToken::new();
        let issuer = TestIssuer::new();
        let running = godel_orchestrator::start_with_verifier(
            config,
            Dependencies {
                bus: bus.clone() as Arc<dyn Bus>,
            },
            issuer.verifier(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let team = TeamId::new();
        let endpoint = format!("http://{}", running.grpc_addr());
        let token = issuer.team_admin(team);
        let client = OrchestratorServiceClient::new(authed(&endpoint, &token).await);
        let keys = ProviderKeyServiceClient::new(authed(&endpoint, &token).await);
        let db = godel_store::connect(&database).await.unwrap();
        godel_store::migrate::<Migrator>(&db).await.unwrap();
        let relay = OutboxRelay::new(
            db.clone(),
            Arc::new(MemoryBus::default()) as Arc<dyn Bus>,
            RelayConfig::new("orchestrator"),
        );
        let sessions = Sessions::new(
            db.clone(),
            relay.notifier(),
            sessions_config,
            OrchestratorId::new(),
        );
        Self {
            _bus: bus,
            client,
            keys,
            shutdown,
            running: Some(running),
            published,
            root,
            repo,
            team,
            db,
            sessions,
            test_db,
            http: reqwest::Client::new(),
            issuer,
        }
    }

    async fn set_key(&mut self, provider: &str, name: &str, secret: &str) -> pb::ProviderKey {
        self.keys
            .set_provider_key(pb::SetProviderKeyRequest {
                team_id: self.team.to_string(),
                provider: provider.into(),
                name: name.into(),
                secret: secret.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap()
    }

    async fn set_default_keys(&mut self) {
        self.set_key("openai", "default", OPENAI_KEY).await;
        self.set_key("anthropic", "default", ANTHROPIC_KEY).await;
    }

    /// Starts a session of the idle agent and waits until it wrote down its access.
    async fn start_agent(&mut self, limits: pb::SessionLimits) -> Agent {
        self.start_agent_with(limits, serde_json::json!({})).await
    }

    async fn start_agent_with(
        &mut self,
        limits: pb::SessionLimits,
        payload: serde_json::Value,
    ) -> Agent {
        let task = TaskId::new();
        let session = self
            .client
            .start_session(pb::StartSessionRequest {
                task_id: task.to_string(),
                epoch: 1,
                team_id: self.team.to_string(),
                adapter: "agent".into(),
                repository: Some(pb::Repository {
                    url: self.repo.display().to_string(),
                    ..Default::default()
                }),
                prompt: "use the model".into(),
                task_type: "code.edit".into(),
                payload_json: payload.to_string(),
                limits: Some(limits),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        let worktree = self.root.path().join("worktrees").join(&session.id);
        let file = worktree.join(".llm");
        let text = eventually("the agent wrote its LLM access", WAIT, || {
            let file = file.clone();
            async move { std::fs::read_to_string(file).ok() }
        })
        .await;
        let mut lines = text.lines();
        let base_url = lines.next().unwrap().to_owned();
        let token = lines.next().unwrap().to_owned();
        assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
        assert!(token.starts_with("gdst_") && token.len() == 69, "{token}");
        Agent {
            id: session.id,
            base_url,
            token,
            worktree,
        }
    }

    async fn call(
        &self,
        agent: &Agent,
        path: &str,
        auth: Auth<'_>,
        headers: &[(&str, &str)],
        body: serde_json::Value,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", agent.base_url))
            .json(&body);
        request = match auth {
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::ApiKey(token) => request.header("x-api-key", token),
            Auth::None => request,
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn session(&mut self, id: &str) -> pb::Session {
        self.client
            .get_session(pb::GetSessionRequest {
                team_id: self.team.to_string(),
                session_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
    }

    async fn wait_for_usage(&mut self, id: &str, input: u64, output: u64, cost: u64) {
        let client = self.client.clone();
        let team = self.team.to_string();
        let id = id.to_owned();
        eventually(
            &format!("session {id} used {input}/{output} tokens for {cost}"),
            WAIT,
            || {
                let (mut client, team, id) = (client.clone(), team.clone(), id.clone());
                async move {
                    let session = client
                        .get_session(pb::GetSessionRequest {
                            team_id: team,
                            session_id: id,
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .session
                        .unwrap();
                    let usage = session.usage.unwrap();
                    (usage.input_tokens == input
                        && usage.output_tokens == output
                        && usage.cost_micro_usd == cost)
                        .then_some(())
                }
            },
        )
        .await;
    }

    async fn events(&mut self, id: &str) -> Vec<pb::SessionEvent> {
        let mut stream = self
            .client
            .stream_session_events(pb::StreamSessionEventsRequest {
                team_id: self.team.to_string(),
                session_id: id.into(),
                from_offset: 0,
                follow: false,
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.unwrap() {
            events.push(event);
        }
        events
    }

    async fn stop(&mut self, id: &str) -> pb::Session {
        self.client
            .stop_session(pb::StopSessionRequest {
                team_id: self.team.to_string(),
                session_id: id.into(),
                reason: "test done".into(),
                force: false,
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
    }

    async fn finish(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.unwrap();
        }
        self.test_db.cleanup().await;
    }
}

/// A call: path (and query), body, how the token is sent, extra headers.
type Call<'a> = (
    &'a str,
    serde_json::Value,
    Auth<'a>,
    &'a [(&'a str, &'a str)],
);

fn chat(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "catalog-model",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    })
}

fn responses(stream: bool) -> serde_json::Value {
    serde_json::json!({"model": "catalog-model", "input": "hello", "stream": stream})
}

fn messages(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "claude-test",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    })
}

const ANTHROPIC_HEADERS: &[(&str, &str)] = &[
    ("anthropic-version", "2023-06-01"),
    (
        "anthropic-beta",
        "interleaved-thinking-2025-05-14,fine-grained-tool-streaming",
    ),
];

fn script() -> Script {
    Script {
        input_tokens: INPUT,
        output_tokens: OUTPUT,
        ..Script::default()
    }
}

fn limits() -> pb::SessionLimits {
    pb::SessionLimits::default()
}

async fn the_proxy_forwards_every_api_with_the_real_key(kind: DbKind) {
    let llm = ScriptedLlm::start(script()).await.unwrap();
    let mut h = Harness::new(kind, &llm.base_url()).await;
    h.set_default_keys().await;
    let agent = h.start_agent(limits()).await;
    let token = agent.token.clone();
    let calls: Vec<Call> = vec![
        (
            "/v1/chat/completions",
            chat(false),
            Auth::Bearer(&token),
            &[],
        ),
        (
            "/v1/chat/completions",
            chat(true),
            Auth::Bearer(&token),
            &[],
        ),
        ("/v1/responses", responses(false), Auth::Bearer(&token), &[]),
        ("/v1/responses", responses(true), Auth::Bearer(&token), &[]),
        (
            "/v1/messages",
            messages(false),
            Auth::ApiKey(&token),
            ANTHROPIC_HEADERS,
        ),
        (
            "/v1/messages?beta=true",
            messages(true),
            Auth::Bearer(&token),
            ANTHROPIC_HEADERS,
        ),
        (
            "/v1/messages/count_tokens",
            messages(false),
            Auth::ApiKey(&token),
            ANTHROPIC_HEADERS,
        ),
    ];
    for (path, body, auth, headers) in calls {
        let stream = body["stream"].as_bool().unwrap_or(false) && !path.contains("count");
        let response = h.call(&agent, path, auth, headers, body).await;
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let text = response.text().await.unwrap();
        if stream {
            assert!(
                content_type.starts_with("text/event-stream"),
                "{path}: {content_type}"
            );
            assert!(text.contains("data: "), "{path}: {text}");
        } else {
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
        }
        if !path.contains("count") {
            assert!(text.contains("Done: I wrote the file."), "{path}: {text}");
        }
    }
    let seen = llm.requests();
    assert_eq!(seen.len(), 7);
    for request in &seen {
        let expected = if request.path.starts_with("/v1/messages") {
            ANTHROPIC_KEY
        } else {
            OPENAI_KEY
        };
        assert_eq!(request.credential(), Some(expected), "{}", request.path);
        assert!(
            request.headers.values().all(|v| !v.contains("gdst_")),
            "the session token reached the provider: {:?}",
            request.headers
        );
    }
    let openai: Vec<_> = seen
        .iter()
        .filter(|r| !r.path.starts_with("/v1/messages"))
        .collect();
    assert!(openai.iter().all(|r| r.header("x-api-key").is_none()));
    // The catalog id was mapped; the streamed chat asked for its usage.
    assert!(openai.iter().all(|r| r.body["model"] == "upstream-model"));
    assert_eq!(seen[1].body["stream_options"]["include_usage"], true);
    let anthropic: Vec<_> = seen
        .iter()
        .filter(|r| r.path.starts_with("/v1/messages"))
        .collect();
    for request in &anthropic {
        assert!(request.header("authorization").is_none());
        assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(
            request.header("anthropic-beta"),
            Some("interleaved-thinking-2025-05-14,fine-grained-tool-streaming")
        );
        assert_eq!(request.body["model"], "claude-test");
    }
    assert_eq!(anthropic[1].query.as_deref(), Some("beta=true"));
    assert_eq!(anthropic[2].path, "/v1/messages/count_tokens");

    // Six metered calls (count_tokens is free), priced by model.
    let cost = 4 * UPSTREAM_MODEL_COST + 2 * CLAUDE_COST;
    h.wait_for_usage(&agent.id, 6 * INPUT, 6 * OUTPUT, cost)
        .await;
    let events = h.events(&agent.id).await;
    let usage: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Usage(u)) => Some((u.input_tokens, u.output_tokens, u.cost_micro_usd)),
            _ => None,
        })
        .collect();
    assert_eq!(usage.len(), 6, "{usage:?}");
    assert!(usage.contains(&(INPUT, OUTPUT, CLAUDE_COST)));
    assert!(usage.contains(&(INPUT, OUTPUT, UPSTREAM_MODEL_COST)));
    // Totals per team and per task.
    let session = h.session(&agent.id).await;
    let task: TaskId = session.task_id.parse().unwrap();
    let expected = Usage {
        input_tokens: 6 * INPUT,
        output_tokens: 6 * OUTPUT,
        cost_micro_usd: cost,
    };
    assert_eq!(
        h.sessions.usage(h.team, Some(task)).await.unwrap(),
        expected
    );
    assert_eq!(h.sessions.usage(h.team, None).await.unwrap(), expected);
    assert_eq!(
        h.sessions.usage(TeamId::new(), None).await.unwrap(),
        Usage::default()
    );
    // And in the metrics, by team.
    let metrics = h
        .http
        .get(format!(
            "http://{}/metrics",
            h.running.as_ref().unwrap().http_addr()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let team = format!("team=\"{}\"", h.team);
    let sum = |name: &str, filter: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(&team) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    assert_eq!(
        sum("godel_llm_proxy_tokens_total", "direction=\"input\""),
        6 * INPUT
    );
    assert_eq!(
        sum("godel_llm_proxy_tokens_total", "direction=\"output\""),
        6 * OUTPUT
    );
    assert_eq!(sum("godel_llm_proxy_cost_micro_usd_total", ""), cost);
    assert!(
        metrics.contains("godel_llm_proxy_requests_total{"),
        "{metrics}"
    );
    h.stop(&agent.id).await;
    h.finish().await;
}

/// Storing and listing keys needs `provider_keys:manage` in the team: a developer
/// (who runs sessions) cannot, nor can a key manager of another team.
async fn provider_keys_need_their_permission(kind: DbKind) {
    let llm = ScriptedLlm::start(script()).await.unwrap();
    let mut h = Harness::new(kind, &llm.base_url()).await;
    h.set_key("openai", "default", OPENAI_KEY).await;
    let url = format!("http://{}", h.running.as_ref().unwrap().grpc_addr());
    let developer = h.issuer.member(
        h.team,
        &[
            Permission::TasksCreate,
            Permission::SessionsRead,
            Permission::KeysManage,
        ],
    );
    let outsider = h.issuer.team_admin(TeamId::new());
    for token in [developer, outsider] {
        let mut keys = ProviderKeyServiceClient::new(authed(&url, &token).await);
        let err = keys
            .set_provider_key(pb::SetProviderKeyRequest {
                team_id: h.team.to_string(),
                provider: "openai".into(),
                name: "mine".into(),
                secret: "sk-not-allowed".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        let err = keys
            .list_provider_keys(pb::ListProviderKeysRequest {
                team_id: h.team.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    }
    let listed = h
        .keys
        .list_provider_keys(pb::ListProviderKeysRequest {
            team_id: h.team.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1, "the refused calls stored nothing");
    h.finish().await;
}

async fn rotation_changes_what_the_upstream_sees(kind: DbKind) {
    let llm = ScriptedLlm::start(script()).await.unwrap();
    let mut h = Harness::new(kind, &llm.base_url()).await;
    let key = h.set_key("openai", "default", OPENAI_KEY).await;
    let agent = h.start_agent(limits()).await;
    let ok = h
        .call(
            &agent,
            "/v1/chat/completions",
            Auth::Bearer(&agent.token),
            &[],
            chat(false),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let rotated = h
        .keys
        .rotate_provider_key(pb::RotateProviderKeyRequest {
            team_id: h.team.to_string(),
            key_id: key.id.clone(),
            secret: "sk-openai-rotated-key-99999".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!((rotated.version, rotated.hint.as_str()), (2, "9999"));
    let ok = h
        .call(
            &agent,
            "/v1/chat/completions",
            Auth::Bearer(&agent.token),
            &[],
            chat(true),
        )
        .await;
    assert_eq!(ok.status(), 200);
    ok.text().await.unwrap();
    let seen: Vec<_> = llm
        .requests()
        .iter()
        .map(|r| r.credential().unwrap().to_owned())
        .collect();
    assert_eq!(seen, [OPENAI_KEY, "sk-openai-rotated-key-99999"]);
    // A session naming another key in its payload uses that one.
    h.set_key("openai", "team-b", "sk-openai-named-key-77777")
        .await;
    let named = h
        .start_agent_with(
            limits(),
            serde_json::json!({"llm": {"keys": {"openai": "team-b"}}}),
        )
        .await;
    let ok = h
        .call(
            &named,
            "/v1/responses",
            Auth::Bearer(&named.token),
            &[],
            responses(false),
        )
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        llm.requests().last().unwrap().credential(),
        Some("sk-openai-named-key-77777")
    );
    h.stop(&named.id).await;
    h.stop(&agent.id).await;
    h.finish().await;
}

async fn a_spent_budget_is_refused(kind: DbKind) {
    let llm = ScriptedLlm::start(script()).await.unwrap();
    let mut h = Harness::new(kind, &llm.base_url()).await;
    h.set_default_keys().await;
    // Tokens: the first call (120 tokens) spends a budget of 100.
    let by_tokens = h
        .start_agent(pb::SessionLimits {
            max_tokens: 100,
            ..limits()
        })
        .await;
    let first = h
        .call(
            &by_tokens,
            "/v1/messages",
            Auth::ApiKey(&by_tokens.token),
            ANTHROPIC_HEADERS,
            messages(false),
        )
        .await;
    assert_eq!(first.status(), 200);
    first.text().await.unwrap();
    h.wait_for_usage(&by_tokens.id, INPUT, OUTPUT, CLAUDE_COST)
        .await;
    let refused = h
        .call(
            &by_tokens,
            "/v1/messages",
            Auth::ApiKey(&by_tokens.token),
            ANTHROPIC_HEADERS,
            messages(true),
        )
        .await;
    assert_eq!(refused.status(), 402);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "billing_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("token budget"), "{message}");
    // Cost: one chat call (400 micro-USD) spends a budget of 300.
    let by_cost = h
        .start_agent(pb::SessionLimits {
            max_cost_micro_usd: 300,
            ..limits()
        })
        .await;
    let first = h
        .call(
            &by_cost,
            "/v1/chat/completions",
            Auth::Bearer(&by_cost.token),
            &[],
            chat(true),
        )
        .await;
    assert_eq!(first.status(), 200);
    first.text().await.unwrap();
    h.wait_for_usage(&by_cost.id, INPUT, OUTPUT, UPSTREAM_MODEL_COST)
        .await;
    let refused = h
        .call(
            &by_cost,
            "/v1/responses",
            Auth::Bearer(&by_cost.token),
            &[],
            responses(false),
        )
        .await;
    assert_eq!(refused.status(), 402);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "budget_exhausted");
    // The refused calls never reached the provider.
    assert_eq!(llm.requests().len(), 2);
    h.stop(&by_tokens.id).await;
    h.stop(&by_cost.id).await;
    h.finish().await;
}

async fn bad_expired_and_revoked_tokens_are_refused(kind: DbKind) {
    let llm = ScriptedLlm::start(script()).await.unwrap();
    let mut h = Harness::new(kind, &llm.base_url()).await;
    h.set_default_keys().await;
    let agent = h.start_agent(limits()).await;
    let unauthorized = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 401);
        response.json::<serde_json::Value>().await.unwrap()
    };
    let body = unauthorized(
        h.call(&agent, "/v1/chat/completions", Auth::None, &[], chat(false))
            .await,
    )
    .await;
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let forged = format!("gdst_{}", "0".repeat(64));
    let body = unauthorized(
        h.call(
            &agent,
            "/v1/responses",
            Auth::Bearer(&forged),
            &[],
            responses(false),
        )
        .await,
    )
    .await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let body = unauthorized(
        h.call(
            &agent,
            "/v1/messages",
            Auth::ApiKey(OPENAI_KEY),
            ANTHROPIC_HEADERS,
            messages(false),
        )
        .await,
    )
    .await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    // Only the token's hash is stored, and it expires with the session's limit.
    let conn = h.db.conn();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT token_hash, session_id FROM session_tokens",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let hash: String = rows[0].try_get("", "token_hash").unwrap();
    assert!(!hash.contains(&agent.token[5..]));
    let now = chrono::Utc::now();
    let binding = tokens::check(conn, &agent.token, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(binding.session_id, agent.id.parse::<SessionId>().unwrap());
    assert_eq!(binding.team_id, h.team);
    let later = now + chrono::TimeDelta::hours(2);
    assert_eq!(
        tokens::check(conn, &agent.token, later).await.unwrap(),
        Err(Refusal::Expired)
    );

    let ok = h
        .call(
            &agent,
            "/v1/chat/completions",
            Auth::Bearer(&agent.token),
            &[],
            chat(false),
        )
        .await;
    assert_eq!(ok.status(), 200);
    // Once the session ends, its token is revoked.
    let stopped = h.stop(&agent.id).await;
    assert_eq!(stopped.state(), pb::SessionState::Cancelled);
    let body = unauthorized(
        h.call(
            &agent,
            "/v1/chat/completions",
            Auth::Bearer(&agent.token),
            &[],
            chat(false),
        )
        .await,
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    assert_eq!(
        tokens::check(h.db.conn(), &agent.token, chrono::Utc::now())
            .await
            .unwrap(),
        Err(Refusal::Revoked)
    );
    assert_eq!(llm.requests().len(), 1);
    h.finish().await;
}

/// An upstream whose SSE reply sends its first event, then waits for the test.
async fn gated_upstream(gate: Arc<tokio::sync::Notify>) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let gate = gate.clone();
            async move {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
                tokio::spawn(async move {
                    let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"first\"}}]}\n\n";
                    tx.send(Ok(first.to_owned())).await.unwrap();
                    gate.notified().await;
                    let last = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
                    tx.send(Ok(last.to_owned())).await.unwrap();
                });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn streams_pass_through_unbuffered(kind: DbKind) {
    let gate = Arc::new(tokio::sync::Notify::new());
    let upstream = gated_upstream(gate.clone()).await;
    let mut h = Harness::new(kind, &upstream).await;
    h.set_default_keys().await;
    let agent = h.start_agent(limits()).await;
    let mut response = h
        .call(
            &agent,
            "/v1/chat/completions",
            Auth::Bearer(&agent.token),
            &[],
            chat(true),
        )
        .await;
    assert_eq!(response.status(), 200);
    // The first event arrives while the upstream still holds the rest back: a
    // proxy that buffered the body would never deliver it.
    let first = tokio::time::timeout(WAIT, response.chunk())
        .await
        .expect("the first event passes before the stream ends")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    // Metered from the final chunk, priced as the mapped `upstream-model`.
    h.wait_for_usage(&agent.id, 5, 2, 30).await;
    h.stop(&agent.id).await;
    h.finish().await;
}

/// Everything logged in this test process, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn captured_logs() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(captured.clone())
                .init();
            captured
        })
        .clone()
}

async fn a_canary_key_never_leaks(kind: DbKind) {
    let logs = captured_logs();
    let llm = ScriptedLlm::start(script()).await.unwrap();
    let mut h = Harness::new(kind, &llm.base_url()).await;
    let canary = format!("sk-canary-{}", uuid_like());
    let rotated_canary = format!("sk-canary-rotated-{}", uuid_like());
    let mut seen_by_client = Vec::new();
    let key = h.set_key("openai", "default", &canary).await;
    seen_by_client.push(format!("{key:?}"));
    let anthropic = h.set_key("anthropic", "default", &canary).await;
    seen_by_client.push(format!("{anthropic:?}"));
    let agent = h.start_agent(limits()).await;
    for (path, body, headers) in [
        ("/v1/chat/completions", chat(true), &[][..]),
        ("/v1/responses", responses(false), &[][..]),
        ("/v1/messages", messages(true), ANTHROPIC_HEADERS),
    ] {
        let response = h
            .call(&agent, path, Auth::Bearer(&agent.token), headers, body)
            .await;
        assert_eq!(response.status(), 200);
        seen_by_client.push(format!("{:?}", response.headers()));
        seen_by_client.push(response.text().await.unwrap());
    }
    let rotated = h
        .keys
        .rotate_provider_key(pb::RotateProviderKeyRequest {
            team_id: h.team.to_string(),
            key_id: key.id.clone(),
            secret: rotated_canary.clone(),
        })
        .await
        .unwrap();
    seen_by_client.push(format!("{rotated:?}"));
    let response = h
        .call(
            &agent,
            "/v1/chat/completions",
            Auth::Bearer(&agent.token),
            &[],
            chat(false),
        )
        .await;
    seen_by_client.push(response.text().await.unwrap());
    let listed = h
        .keys
        .list_provider_keys(pb::ListProviderKeysRequest {
            team_id: h.team.to_string(),
        })
        .await
        .unwrap();
    seen_by_client.push(format!("{listed:?}"));
    // A duplicate set fails without echoing the secret.
    let duplicate = h
        .keys
        .set_provider_key(pb::SetProviderKeyRequest {
            team_id: h.team.to_string(),
            provider: "openai".into(),
            name: "default".into(),
            secret: canary.clone(),
        })
        .await
        .unwrap_err();
    seen_by_client.push(format!("{duplicate:?}"));
    h.wait_for_usage(
        &agent.id,
        4 * INPUT,
        4 * OUTPUT,
        3 * UPSTREAM_MODEL_COST + CLAUDE_COST,
    )
    .await;
    let session = h.stop(&agent.id).await;
    seen_by_client.push(format!("{session:?}"));
    let events = h.events(&agent.id).await;
    seen_by_client.push(format!("{events:?}"));

    // The provider did get the real keys.
    let credentials: Vec<String> = llm
        .requests()
        .iter()
        .map(|r| r.credential().unwrap().to_owned())
        .collect();
    assert_eq!(
        credentials,
        [
            canary.clone(),
            canary.clone(),
            canary.clone(),
            rotated_canary.clone()
        ]
    );

    let mut agent_files = String::new();
    for entry in std::fs::read_dir(&agent.worktree).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            agent_files.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    assert!(agent_files.contains(&format!("GODEL_SESSION_TOKEN={}", agent.token)));
    let published = h.published.lock().unwrap().concat();
    let published = String::from_utf8_lossy(&published).into_owned();
    assert!(published.contains("usage"), "usage events were published");
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.contains("provider key stored"), "logs were captured");
    for secret in [&canary, &rotated_canary] {
        for (place, text) in [
            ("a gRPC or proxy response", seen_by_client.concat()),
            ("the agent's environment or files", agent_files.clone()),
            ("a published event", published.clone()),
            ("the logs", logged.clone()),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "the key leaked into {place}"
            );
        }
    }
    assert!(
        !logged.contains(&agent.token),
        "the session token leaked into the logs"
    );
    h.finish().await;
}

fn uuid_like() -> String {
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

/// A planner asks as the person planning: their access token and their team in
/// `x-godel-team`. It needs `plans:create` there; the team's key goes upstream.
async fn a_planner_asks_with_the_callers_token_for_its_team(kind: DbKind) {
    let llm = ScriptedLlm::start(script()).await.unwrap();
    let mut h = Harness::new(kind, &llm.base_url()).await;
    h.set_default_keys().await;
    // Only to learn the proxy's address.
    let agent = h.start_agent(limits()).await;
    let team = h.team.to_string();
    let planner = h.issuer.member(h.team, &[Permission::PlansCreate]);
    let reader = h.issuer.member(h.team, &[Permission::PlansRead]);
    let outsider = h.issuer.team_admin(TeamId::new());
    let before = llm.requests().len();

    let answered = h
        .call(
            &agent,
            "/v1/chat/completions",
            Auth::Bearer(&planner),
            &[("x-godel-team", &team)],
            chat(false),
        )
        .await;
    assert_eq!(answered.status(), 200);
    let requests = llm.requests();
    assert_eq!(requests.len(), before + 1);
    assert_eq!(requests.last().unwrap().credential(), Some(OPENAI_KEY));

    for (token, headers, status) in [
        // Without the team.
        (planner.as_str(), &[][..], 400),
        // Without plans:create there.
        (reader.as_str(), &[("x-godel-team", team.as_str())][..], 403),
        (
            outsider.as_str(),
            &[("x-godel-team", team.as_str())][..],
            403,
        ),
        // Not a token at all.
        ("not-a-token", &[("x-godel-team", team.as_str())][..], 401),
    ] {
        let refused = h
            .call(
                &agent,
                "/v1/chat/completions",
                Auth::Bearer(token),
                headers,
                chat(false),
            )
            .await;
        assert_eq!(refused.status(), status, "{headers:?}");
    }
    assert_eq!(
        llm.requests().len(),
        before + 1,
        "nothing refused went upstream"
    );
    h.finish().await;
}

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::DbKind::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::DbKind::Postgres).await;
            })*
        }
    };
}

on_both_databases!(
    the_proxy_forwards_every_api_with_the_real_key,
    provider_keys_need_their_permission,
    rotation_changes_what_the_upstream_sees,
    a_spent_budget_is_refused,
    bad_expired_and_revoked_tokens_are_refused,
    streams_pass_through_unbuffered,
    a_canary_key_never_leaks,
    a_planner_asks_with_the_callers_token_for_its_team,
);
