//! Real agent CLIs — Pi, Claude Code and Codex, installed from npm at pinned versions
//! by `scripts/agents.sh` — each running in a git worktree against the scripted LLM
//! provider (`godel_test_utils::llm`): the agent's own tool changes a file, its
//! output becomes the expected normalized events, it holds no credential but the
//! session token, a provider error fails the run even when the CLI exits 0, and a
//! cancel stops it with its own interrupt. First one level below sessions (worktree,
//! adapter spec, process runtime), then as full sessions through Godel's LLM proxy
//! with the team's real key upstream ([`through_the_proxy`]).
//!
//! The CLIs are found in `$AGENT_CLI_BIN` (set by `scripts/test.sh`), else in
//! `target/agents/node_modules/.bin`. A missing CLI fails the test under `CI=true`
//! and skips it (with the reason printed) otherwise.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::time::Duration;

use godel_config::Secret;
use godel_orchestrator::adapters::{self, Cli};
use godel_orchestrator::runtime::confine::landlock_support;
use godel_orchestrator::runtime::event::{AgentState, ChangeKind, EventBody, Verdict};
use godel_orchestrator::runtime::process::{
    self, AgentSpec, ENV_ALLOW_LIST, RunEnd, RunReport, StopStep,
};
use godel_orchestrator::runtime::worktree::{
    Finished, RepoSource, Worktree, WorktreeConfig, WorktreeManager,
};
use godel_orchestrator::session::LlmAccess;
use godel_orchestrator::{AgentCli, SessionsConfig};
use godel_test_utils::git::init_repo;
use godel_test_utils::identity::{TestIssuer, authed};
use godel_test_utils::llm::{Script, ScriptedLlm};
use godel_types::{SessionId, TaskId};
use tokio_util::sync::CancellationToken;

/// The file the scripted model has the agent write, and its content.
const FILE: &str = "hello.txt";
const CONTENT: &str = "hello from the scripted model\n";
const FINAL_TEXT: &str = "Done: I wrote hello.txt.";
const PROMPT: &str = "Create hello.txt with a greeting.";

/// Where the agent CLIs are installed, when they are.
fn agent_bin() -> PathBuf {
    std::env::var_os("AGENT_CLI_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/agents/node_modules/.bin"),
        PathBuf::from,
    )
}

/// The executable of `cli`, or `None` (after printing why) when it is not installed
/// and the run is not CI. Under `CI=true` a missing CLI fails the test.
fn program(cli: Cli) -> Option<PathBuf> {
    let name = match cli {
        Cli::Pi => "pi",
        Cli::ClaudeCode => "claude",
        Cli::Codex => "codex",
    };
    let path = agent_bin().join(name);
    if path.is_file() {
        return Some(path);
    }
    let reason = format!(
        "the `{}` CLI is not installed at {}; run `scripts/agents.sh` (or set AGENT_CLI_BIN)",
        cli.name(),
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
    eprintln!("skipped: {reason}");
    None
}

/// The orchestrator's session settings with `cli` at `program`.
fn config(cli: Cli, program: PathBuf) -> SessionsConfig {
    let mut config = SessionsConfig::default();
    let settings = AgentCli {
        program,
        ..cli.config(&config).clone()
    };
    match cli {
        Cli::Pi => config.pi = settings,
        Cli::ClaudeCode => config.claude_code = settings,
        Cli::Codex => config.codex = settings,
    }
    config
}

/// One agent session, one level below `Sessions`: a worktree from
/// [`WorktreeManager`], the spec from [`adapters::spec`] with the scripted provider
/// as the LLM endpoint, run by the process runtime and judged by the adapter.
struct AgentRun {
    _root: tempfile::TempDir,
    manager: WorktreeManager,
    worktree: Worktree,
    home: PathBuf,
    llm: ScriptedLlm,
    token: String,
    spec: AgentSpec,
}

impl AgentRun {
    /// Prepares a run of `cli`; `None` when the CLI is not installed (outside CI).
    async fn new(cli: Cli) -> Option<Self> {
        let program = program(cli)?;
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        init_repo(&repo);
        let manager = WorktreeManager::new(WorktreeConfig {
            worktrees_dir: root.path().join("worktrees"),
            cache_dir: root.path().join("cache"),
            keep_failed_for: Duration::from_secs(3600),
        });
        let (session, task) = (SessionId::new(), TaskId::new());
        let worktree = manager
            .create(session, task, &RepoSource::Local(repo), None)
            .await
            .unwrap();
        let home = root.path().join("homes").join(session.to_string());
        let llm = ScriptedLlm::start(Script {
            path: FILE.to_owned(),
            content: CONTENT.to_owned(),
            root: Some(worktree.path.clone()),
            final_text: FINAL_TEXT.to_owned(),
            input_tokens: 120,
            output_tokens: 30,
        })
        .await
        .unwrap();
        let token = format!("gst_{}", godel_test_utils::unique_name("session"));
        let access = LlmAccess {
            base_url: llm.base_url(),
            token: Secret::new(token.clone()),
        };
        let mut spec = adapters::spec(
            cli,
            &config(cli, program),
            PROMPT,
            &worktree.path,
            &home,
            Some(&access),
        )
        .unwrap();
        spec.limits.wall_clock = Some(Duration::from_secs(180));
        Some(Self {
            _root: root,
            manager,
            worktree,
            home,
            llm,
            token,
            spec,
        })
    }

    async fn run(&self) -> RunReport {
        process::run(&self.spec, &CancellationToken::new(), |_| {})
            .await
            .unwrap()
    }

    /// The agent held no credential but the session token: its environment is the
    /// allow-list, its home variables and the adapter's own (no provider key
    /// variable), the token appears only in the variables meant for it, no file in
    /// its home holds the token, and every request the provider saw carried it.
    fn assert_only_the_session_token(&self) {
        const TOKEN_VARS: &[&str] = &["GODEL_SESSION_TOKEN", "ANTHROPIC_AUTH_TOKEN"];
        for (name, value) in &self.spec.env {
            assert!(
                !ENV_ALLOW_LIST.contains(&name.as_str()),
                "the adapter overrides the allow-listed {name}"
            );
            let upper = name.to_uppercase();
            assert!(
                !(upper.ends_with("_API_KEY") || upper.contains("SECRET")),
                "the agent's environment has a provider key variable {name}"
            );
            if value.contains(&self.token) {
                assert!(
                    TOKEN_VARS.contains(&name.as_str()),
                    "the session token leaked into {name}"
                );
            }
        }
        for file in files(&self.home) {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&self.token),
                "{} holds the session token",
                file.display()
            );
        }
        let requests = self.llm.requests();
        assert!(!requests.is_empty(), "the agent never called the provider");
        for request in &requests {
            // Model calls carry the token; anything else (Claude Code's `HEAD /`
            // connectivity check) carries it or nothing.
            let credential = request.credential();
            assert!(
                credential == Some(self.token.as_str())
                    || (credential.is_none() && !request.path.starts_with("/v1/")),
                "{} {} carried {credential:?}",
                request.method,
                request.path
            );
        }
    }
}

/// Every regular file beneath `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// Why a run did not succeed, with what the agent printed.
fn explain(report: &RunReport) -> String {
    let lines: Vec<&str> = report.events.iter().map(|e| e.raw.as_str()).collect();
    format!(
        "verdict {:?}, exit {:?}, output:\n{}",
        report.verdict,
        report.exit,
        lines.join("\n")
    )
}

async fn edits_a_file_through_its_own_tool(cli: Cli) {
    let Some(run) = AgentRun::new(cli).await else {
        return;
    };
    let report = run.run().await;
    assert_eq!(report.verdict, Verdict::Succeeded, "{}", explain(&report));
    // It ran under the confinement every session gets.
    assert_eq!(report.confinement, landlock_support());
    assert_eq!(
        std::fs::read_to_string(run.worktree.path.join(FILE))
            .unwrap_or_else(|e| panic!("{e}: {}", explain(&report))),
        CONTENT
    );

    let bodies: Vec<&EventBody> = report.events.iter().map(|e| &e.body).collect();
    let call = bodies
        .iter()
        .find_map(|b| match b {
            EventBody::ToolCall { call_id, .. } => Some(call_id.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tool call: {}", explain(&report)));
    assert!(
        bodies.iter().any(|b| matches!(b,
            EventBody::ToolResult { call_id, is_error: false, .. } if *call_id == call)),
        "no successful result for {call}: {}",
        explain(&report)
    );
    assert!(
        bodies.iter().any(|b| matches!(b,
            EventBody::FileChange { path, kind: ChangeKind::Added, .. } if path == FILE)),
        "no file change for {FILE}: {}",
        explain(&report)
    );
    assert!(
        bodies
            .iter()
            .any(|b| matches!(b, EventBody::AssistantMessage { text } if text == FINAL_TEXT)),
        "no final message: {}",
        explain(&report)
    );
    let (input, output) = bodies.iter().fold((0, 0), |(i, o), b| match b {
        EventBody::Usage {
            input_tokens,
            output_tokens,
            ..
        } => (i + input_tokens, o + output_tokens),
        _ => (i, o),
    });
    // Two model calls of 120 in / 30 out each (Pi reports each, the others a total).
    assert_eq!((input, output), (240, 60), "{}", explain(&report));
    assert!(report.events.iter().all(|e| !e.raw.is_empty()));

    run.assert_only_the_session_token();

    // The work is committed on the session's branch like any session's.
    let finished = run.manager.finish(&run.worktree, true).await.unwrap();
    let Finished::Committed { commit, diff } = finished else {
        panic!("expected a commit, got {finished:?}");
    };
    assert!(commit.is_some());
    assert!(diff.files.iter().any(|f| f.path == FILE), "diff: {diff:?}");
}

async fn reports_a_provider_error_as_failed(cli: Cli) -> Option<RunReport> {
    let run = AgentRun::new(cli).await?;
    run.llm.fail_with(Some(401));
    let report = run.run().await;
    let Verdict::Failed { reason } = &report.verdict else {
        panic!("a 401 must fail the run: {}", explain(&report));
    };
    assert!(reason.contains("401"), "{reason}");
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e.body, EventBody::Error { .. })),
        "{}",
        explain(&report)
    );
    assert!(!run.worktree.path.join(FILE).exists());
    run.assert_only_the_session_token();
    Some(report)
}

#[tokio::test]
async fn pi_edits_a_file_through_its_own_tool() {
    edits_a_file_through_its_own_tool(Cli::Pi).await;
}

#[tokio::test]
async fn claude_code_edits_a_file_through_its_own_tool() {
    edits_a_file_through_its_own_tool(Cli::ClaudeCode).await;
}

#[tokio::test]
async fn codex_edits_a_file_through_its_own_tool() {
    edits_a_file_through_its_own_tool(Cli::Codex).await;
}

#[tokio::test]
async fn pi_reports_a_provider_error_as_failed_though_it_exits_0() {
    let Some(report) = reports_a_provider_error_as_failed(Cli::Pi).await else {
        return;
    };
    // Pi exits 0 after a provider error: the verdict came from `agent_end`.
    assert_eq!(report.exit.and_then(|s| s.code()), Some(0));
}

#[tokio::test]
async fn claude_code_reports_a_provider_error_as_failed() {
    reports_a_provider_error_as_failed(Cli::ClaudeCode).await;
}

#[tokio::test]
async fn codex_reports_a_provider_error_as_failed() {
    reports_a_provider_error_as_failed(Cli::Codex).await;
}

/// Cancelled once it started, the agent stops on its own interrupt (Pi: the RPC
/// `abort` command and the end of its input; the others: SIGINT), without SIGTERM.
async fn stops_on_its_own_interrupt(cli: Cli) -> Option<RunReport> {
    let run = AgentRun::new(cli).await?;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let report = process::run(&run.spec, &cancel, move |event| {
        if matches!(
            event.body,
            EventBody::State {
                state: AgentState::Thinking,
                ..
            }
        ) {
            trigger.cancel();
        }
    })
    .await
    .unwrap();
    assert_eq!(report.end, RunEnd::Cancelled, "{}", explain(&report));
    let stop = report.stop.clone().unwrap();
    assert!(
        stop.step == StopStep::Interrupt,
        "the agent needed {:?}: {}",
        stop.step,
        explain(&report)
    );
    assert!(stop.survivors.is_empty());
    Some(report)
}

#[tokio::test]
async fn pi_stops_on_its_rpc_abort() {
    stops_on_its_own_interrupt(Cli::Pi).await;
}

#[tokio::test]
async fn claude_code_stops_on_sigint() {
    stops_on_its_own_interrupt(Cli::ClaudeCode).await;
}

#[tokio::test]
async fn codex_stops_on_sigint() {
    stops_on_its_own_interrupt(Cli::Codex).await;
}

/// Full sessions through Godel's LLM proxy: the orchestrator started with `start`
/// (proxy on, a local key-encryption key, SQLite), the team's provider keys set
/// through `ProviderKeyService`, a session started through `OrchestratorService`
/// with the real CLI's adapter; upstream of the proxy is the scripted provider.
mod through_the_proxy {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use godel_bus::{Bus, MemoryBus};
    use godel_orchestrator::{
        Dependencies, KeysConfig, LocalKekConfig, OrchestratorConfig, ProviderUpstream, ProxyConfig,
    };
    use godel_proto::orchestrator::v1 as pb;
    use godel_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
    use godel_proto::orchestrator::v1::provider_key_service_client::ProviderKeyServiceClient;
    use godel_proto::orchestrator::v1::session_event::Body;
    use godel_store::DatabaseConfig;
    use godel_test_utils::eventually;
    use godel_test_utils::postgres::{DbKind, TestDb};
    use godel_types::TeamId;

    use super::*;

    const OPENAI_KEY: &str = "sk-openai-team-key-canary-0001";
    const ANTHROPIC_KEY: &str = "sk-ant-team-key-canary-0002";
    const WAIT: Duration = Duration::from_secs(180);

    /// Runs one session of `cli` to its end through the proxy and checks what the
    /// issue asks of it. `fail` makes the provider answer that status.
    async fn session(cli: Cli, fail: Option<u16>) {
        let Some(program) = program(cli) else {
            return;
        };
        let test_db = TestDb::of(DbKind::Sqlite).await;
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        init_repo(&repo);
        // The agent's working directory is only known once the session exists;
        // the scripted tools use a relative path, absolute ones are resolved by
        // the agents against their working directory.
        let llm = ScriptedLlm::start(Script {
            path: FILE.to_owned(),
            content: CONTENT.to_owned(),
            root: None,
            final_text: FINAL_TEXT.to_owned(),
            input_tokens: 120,
            output_tokens: 30,
        })
        .await
        .unwrap();
        llm.fail_with(fail);
        let mut sessions = config(cli, program);
        sessions.worktrees_dir = root.path().join("worktrees");
        sessions.homes_dir = root.path().join("homes");
        sessions.cache_dir = root.path().join("cache");
        sessions.allow_local_repositories = true;
        sessions.interrupt_wait = Duration::from_secs(5);
        sessions.term_wait = Duration::from_secs(2);
        let upstream = ProviderUpstream {
            base_url: llm.base_url(),
        };
        let config = OrchestratorConfig {
            server: godel_runtime::ServerConfig::local(),
            database: DatabaseConfig {
                url: test_db.url.clone().into(),
                schema: test_db.schema.clone(),
                max_connections: 4,
                ..DatabaseConfig::default()
            },
            sessions,
            proxy: ProxyConfig {
                enabled: true,
                providers: BTreeMap::from([
                    ("openai".to_owned(), upstream.clone()),
                    ("anthropic".to_owned(), upstream),
                ]),
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
        let mut client = OrchestratorServiceClient::new(authed(&endpoint, &token).await);
        let mut keys = ProviderKeyServiceClient::new(authed(&endpoint, &token).await);
        for (provider, secret) in [("openai", OPENAI_KEY), ("anthropic", ANTHROPIC_KEY)] {
            keys.set_provider_key(pb::SetProviderKeyRequest {
                team_id: team.to_string(),
                provider: provider.into(),
                name: "default".into(),
                secret: secret.into(),
            })
            .await
            .unwrap();
        }

        let started = client
            .start_session(pb::StartSessionRequest {
                task_id: TaskId::new().to_string(),
                epoch: 1,
                team_id: team.to_string(),
                adapter: cli.name().into(),
                repository: Some(pb::Repository {
                    url: repo.display().to_string(),
                    ..Default::default()
                }),
                prompt: PROMPT.into(),
                task_type: "code.edit".into(),
                payload_json: "{}".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        let get = pb::GetSessionRequest {
            team_id: team.to_string(),
            session_id: started.id.clone(),
        };
        let ended = eventually("the session ended", WAIT, || {
            let (mut client, get) = (client.clone(), get.clone());
            async move {
                let s = client
                    .get_session(get)
                    .await
                    .unwrap()
                    .into_inner()
                    .session
                    .unwrap();
                matches!(
                    s.state(),
                    pb::SessionState::Succeeded
                        | pb::SessionState::Failed
                        | pb::SessionState::Cancelled
                )
                .then_some(s)
            }
        })
        .await;
        let mut stream = client
            .stream_session_events(pb::StreamSessionEventsRequest {
                team_id: team.to_string(),
                session_id: started.id.clone(),
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
        let shown = || {
            events
                .iter()
                .map(|e| format!("{:?}", e.body))
                .collect::<Vec<_>>()
                .join("\n")
        };

        // The provider saw the team's key on every model call, never the token.
        let requests = llm.requests();
        assert!(!requests.is_empty(), "no call reached the provider");
        for request in &requests {
            let expected = if request.path.starts_with("/v1/messages") {
                ANTHROPIC_KEY
            } else {
                OPENAI_KEY
            };
            assert_eq!(request.credential(), Some(expected), "{}", request.path);
        }
        // The keys appear nowhere the agent or a reader of its log could see.
        for event in &events {
            let text = format!("{:?}", event);
            assert!(!text.contains(OPENAI_KEY) && !text.contains(ANTHROPIC_KEY));
        }

        match fail {
            None => {
                assert_eq!(
                    ended.state(),
                    pb::SessionState::Succeeded,
                    "{}: {}",
                    ended.error,
                    shown()
                );
                let result = ended.result.clone().unwrap();
                assert!(!result.commit.is_empty());
                assert!(
                    result.diff.unwrap().files.iter().any(|f| f.path == FILE),
                    "{}",
                    shown()
                );
                let has = |f: &dyn Fn(&Body) -> bool| {
                    events.iter().any(|e| e.body.as_ref().is_some_and(f))
                };
                assert!(has(&|b| matches!(b, Body::ToolCall(_))), "{}", shown());
                // Each normalized event carries the agent's own line; the
                // orchestrator's own events carry none.
                let call = events
                    .iter()
                    .find(|e| matches!(e.body, Some(Body::ToolCall(_))))
                    .unwrap();
                assert!(
                    serde_json::from_str::<serde_json::Value>(&call.line).is_ok(),
                    "the tool call's line is the agent's JSON: {}",
                    call.line
                );
                assert!(
                    events
                        .iter()
                        .filter(|e| matches!(e.body, Some(Body::State(_))))
                        .all(|e| e.line.is_empty()),
                    "{}",
                    shown()
                );
                assert!(
                    has(&|b| matches!(b, Body::FileChange(c) if c.path == FILE)),
                    "{}",
                    shown()
                );
                assert!(
                    has(&|b| matches!(b, Body::AssistantMessage(m) if m.text == FINAL_TEXT)),
                    "{}",
                    shown()
                );
                // Counted once: the proxy's metering of the provider's figures; the
                // usage the agent reports about itself stays a raw event.
                let usage = ended.usage.unwrap();
                assert_eq!(
                    (usage.input_tokens, usage.output_tokens),
                    (240, 60),
                    "usage {usage:?}"
                );
            }
            Some(status) => {
                assert_eq!(ended.state(), pb::SessionState::Failed, "{}", shown());
                assert!(ended.error.contains(&status.to_string()), "{}", ended.error);
            }
        }
        shutdown.cancel();
        running.wait().await.unwrap();
        test_db.cleanup().await;
    }

    #[tokio::test]
    async fn pi_session_through_the_proxy() {
        session(Cli::Pi, None).await;
    }

    #[tokio::test]
    async fn claude_code_session_through_the_proxy() {
        session(Cli::ClaudeCode, None).await;
    }

    #[tokio::test]
    async fn codex_session_through_the_proxy() {
        session(Cli::Codex, None).await;
    }

    #[tokio::test]
    async fn pi_provider_error_fails_the_session() {
        session(Cli::Pi, Some(401)).await;
    }

    #[tokio::test]
    async fn claude_code_provider_error_fails_the_session() {
        session(Cli::ClaudeCode, Some(401)).await;
    }

    #[tokio::test]
    async fn codex_provider_error_fails_the_session() {
        session(Cli::Codex, Some(401)).await;
    }
}
