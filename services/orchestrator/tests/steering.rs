//! Steering a running session (`SteerSession`): a message sent to a real Pi in RPC
//! mode reaches the model in the conversation, through Godel's LLM proxy and the
//! scripted provider; an adapter that cannot be steered answers
//! FAILED_PRECONDITION.
//!
//! Pi is found like in `agents.rs`: `$AGENT_CLI_BIN` (set by `scripts/test.sh`),
//! else `target/agents/node_modules/.bin`; missing, it fails the test under
//! `CI=true` and skips it otherwise.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use godel_bus::{Bus, MemoryBus};
use godel_orchestrator::{
    AgentCli, Dependencies, KeysConfig, LocalKekConfig, OrchestratorConfig, ProviderUpstream,
    ProxyConfig, SessionsConfig,
};
use godel_proto::orchestrator::v1 as pb;
use godel_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use godel_proto::orchestrator::v1::provider_key_service_client::ProviderKeyServiceClient;
use godel_store::DatabaseConfig;
use godel_test_utils::eventually;
use godel_test_utils::git::init_repo;
use godel_test_utils::identity::{Authed, TestIssuer, authed};
use godel_test_utils::llm::{Script, ScriptedLlm};
use godel_test_utils::postgres::{DbKind, TestDb};
use godel_types::{TaskId, TeamId};
use tokio_util::sync::CancellationToken;

const SIM_AGENT: &str = env!("CARGO_BIN_EXE_godel-sim-agent");
const FILE: &str = "hello.txt";
const FINAL_TEXT: &str = "Done: I wrote hello.txt.";
const STEER: &str = "Also mention the steering canary 7c1d in your summary.";
const WAIT: Duration = Duration::from_secs(180);

/// Pi's executable, or `None` (after printing why) outside CI when it is missing.
fn pi() -> Option<PathBuf> {
    let dir = std::env::var_os("AGENT_CLI_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/agents/node_modules/.bin"),
        PathBuf::from,
    );
    let path = dir.join("pi");
    if path.is_file() {
        return Some(path);
    }
    let reason = format!(
        "the `pi` CLI is not installed at {}; run `scripts/agents.sh` (or set AGENT_CLI_BIN)",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
    eprintln!("skipped: {reason}");
    None
}

/// An orchestrator (SQLite, in-process bus) with the LLM proxy in front of
/// `upstream` when given, and a client for it authorized as a team admin.
struct Orchestrator {
    client: OrchestratorServiceClient<Authed>,
    keys: ProviderKeyServiceClient<Authed>,
    team: TeamId,
    repo: PathBuf,
    shutdown: CancellationToken,
    running: godel_runtime::RunningService,
    db: TestDb,
    _root: tempfile::TempDir,
}

impl Orchestrator {
    async fn start(pi: Option<PathBuf>, upstream: Option<String>) -> Self {
        let db = TestDb::of(DbKind::Sqlite).await;
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        init_repo(&repo);
        let mut sessions = SessionsConfig {
            worktrees_dir: root.path().join("worktrees"),
            homes_dir: root.path().join("homes"),
            cache_dir: root.path().join("cache"),
            allow_local_repositories: true,
            sim_agent_path: PathBuf::from(SIM_AGENT),
            interrupt_wait: Duration::from_secs(5),
            term_wait: Duration::from_secs(2),
            ..SessionsConfig::default()
        };
        if let Some(program) = pi {
            sessions.pi = AgentCli {
                program,
                ..sessions.pi.clone()
            };
        }
        let proxy = match upstream {
            Some(base_url) => ProxyConfig {
                enabled: true,
                providers: BTreeMap::from([("openai".to_owned(), ProviderUpstream { base_url })]),
                ..ProxyConfig::default()
            },
            None => ProxyConfig::default(),
        };
        let config = OrchestratorConfig {
            server: godel_runtime::ServerConfig::local(),
            database: DatabaseConfig {
                url: db.url.clone().into(),
                schema: db.schema.clone(),
                max_connections: 4,
                ..DatabaseConfig::default()
            },
            sessions,
            proxy,
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
                bus: Arc::new(MemoryBus::default()) as Arc<dyn Bus>,
            },
            issuer.verifier(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let endpoint = format!("http://{}", running.grpc_addr());
        let team = TeamId::new();
        let token = issuer.team_admin(team);
        Self {
            client: OrchestratorServiceClient::new(authed(&endpoint, &token).await),
            keys: ProviderKeyServiceClient::new(authed(&endpoint, &token).await),
            team,
            repo,
            shutdown,
            running,
            db,
            _root: root,
        }
    }

    async fn start_session(&mut self, adapter: &str, payload: &str) -> pb::Session {
        self.client
            .start_session(pb::StartSessionRequest {
                task_id: TaskId::new().to_string(),
                epoch: 1,
                team_id: self.team.to_string(),
                adapter: adapter.into(),
                repository: Some(pb::Repository {
                    url: self.repo.display().to_string(),
                    ..Default::default()
                }),
                prompt: "Create hello.txt with a greeting.".into(),
                task_type: "code.edit".into(),
                payload_json: payload.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
    }

    async fn session_in(&self, id: &str, states: &[pb::SessionState]) -> pb::Session {
        let get = pb::GetSessionRequest {
            team_id: self.team.to_string(),
            session_id: id.to_owned(),
        };
        eventually(&format!("session {id} in {states:?}"), WAIT, || {
            let (mut client, get) = (self.client.clone(), get.clone());
            async move {
                let s = client
                    .get_session(get)
                    .await
                    .unwrap()
                    .into_inner()
                    .session
                    .unwrap();
                states.contains(&s.state()).then_some(s)
            }
        })
        .await
    }

    fn steer(&self, id: &str, message: &str) -> pb::SteerSessionRequest {
        pb::SteerSessionRequest {
            team_id: self.team.to_string(),
            session_id: id.to_owned(),
            message: message.to_owned(),
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await.unwrap();
        self.db.cleanup().await;
    }
}

/// Pi takes a steering message mid-run: the model's next call carries it.
#[tokio::test]
async fn pi_takes_a_steering_message_into_its_conversation() {
    let Some(program) = pi() else {
        return;
    };
    let llm = ScriptedLlm::start(Script {
        path: FILE.to_owned(),
        content: "hello\n".to_owned(),
        root: None,
        final_text: FINAL_TEXT.to_owned(),
        input_tokens: 10,
        output_tokens: 5,
    })
    .await
    .unwrap();
    // The first model call waits until the test has steered.
    llm.hold();
    let mut o = Orchestrator::start(Some(program), Some(llm.base_url())).await;
    o.keys
        .set_provider_key(pb::SetProviderKeyRequest {
            team_id: o.team.to_string(),
            provider: "openai".into(),
            name: "default".into(),
            secret: "sk-openai-team-key".into(),
        })
        .await
        .unwrap();
    let session = o.start_session("pi", "{}").await;
    eventually("Pi calls the model", WAIT, || {
        let n = llm.requests().len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let steered = o
        .client
        .steer_session(o.steer(&session.id, STEER))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(steered.id, session.id);
    llm.release();

    let ended = o
        .session_in(
            &session.id,
            &[
                pb::SessionState::Succeeded,
                pb::SessionState::Failed,
                pb::SessionState::Cancelled,
            ],
        )
        .await;
    assert_eq!(
        ended.state(),
        pb::SessionState::Succeeded,
        "{}",
        ended.error
    );
    let requests = llm.requests();
    let first = requests[0].body.to_string();
    assert!(!first.contains("7c1d"), "the first call precedes the steer");
    assert!(
        requests[1..]
            .iter()
            .any(|r| r.path.starts_with("/v1/") && r.body.to_string().contains(STEER)),
        "no later model call carries the steering message: {:#?}",
        requests.iter().map(|r| &r.body).collect::<Vec<_>>()
    );

    // An ended session cannot be steered.
    let refused = o
        .client
        .steer_session(o.steer(&session.id, STEER))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    o.stop().await;
}

/// The simulated agent (like Claude Code, Codex and commands) cannot be steered:
/// FAILED_PRECONDITION saying so; an empty message is refused.
#[tokio::test]
async fn an_adapter_without_steering_refuses() {
    let mut o = Orchestrator::start(None, None).await;
    let session = o
        .start_session("sim", r#"{"sim": {"duration_ms": 600000, "edits": 1}}"#)
        .await;
    o.session_in(&session.id, &[pb::SessionState::Running])
        .await;
    let refused = o
        .client
        .steer_session(o.steer(&session.id, "change course"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("cannot be steered"),
        "{refused:?}"
    );
    let empty = o
        .client
        .steer_session(o.steer(&session.id, " "))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument, "{empty:?}");
    o.client
        .stop_session(pb::StopSessionRequest {
            team_id: o.team.to_string(),
            session_id: session.id.clone(),
            reason: "done".into(),
            force: true,
        })
        .await
        .unwrap();
    o.stop().await;
}
