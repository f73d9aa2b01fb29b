//! Crash recovery (issue 4): the real `godel-orchestrator` binary takes tasks from a
//! real scheduler (in-process, sharing NATS with the binary), is killed with
//! SIGKILL while its simulated agents run, and is started again with the same id.
//! Afterwards no agent of the killed run is left, each of its sessions is `lost`,
//! each task was leased exactly once more and succeeded, and worktrees nothing
//! accounts for are gone (with git's records of them).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use godel_bus::{BusConfig, MemoryBus};
use godel_orchestrator::SessionsConfig;
use godel_orchestrator::session::{ListFilter, Session, SessionState, Sessions};
use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_scheduler::{QueueConfig, SchedulerConfig};
use godel_store::DatabaseConfig;
use godel_test_utils::eventually;
use godel_test_utils::git::{git, init_repo};
use godel_test_utils::nats::TestNats;
use godel_test_utils::postgres::{DbKind, TestDb};
use godel_types::{OrchestratorId, SessionId, TaskId, TeamId};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const ORCHESTRATOR: &str = env!("CARGO_BIN_EXE_godel-orchestrator");
const SIM_AGENT: &str = env!("CARGO_BIN_EXE_godel-sim-agent");
const WAIT: Duration = Duration::from_secs(90);

fn database(test_db: &TestDb) -> DatabaseConfig {
    DatabaseConfig {
        url: test_db.url.clone().into(),
        schema: test_db.schema.clone(),
        max_connections: 3,
        ..DatabaseConfig::default()
    }
}

/// The pids of live processes whose environment names session `id` (the agent and
/// anything it started), read from `/proc`.
fn processes_of(id: SessionId) -> Vec<i32> {
    let needle = format!("GODEL_SESSION_ID={id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().next().map(|s| s == "Z")
                })
                .unwrap_or(true);
            !zombie
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// A simulated agent that runs as the task's payload says the first time and
/// briefly once the test created `fast` (the retry after the crash).
fn write_agent(root: &Path) -> PathBuf {
    let script = root.join("agent.sh");
    let fast = root.join("fast");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e '{fast}' ]; then exec '{SIM_AGENT}' --edits 1 --duration-ms 10; fi\nexec '{SIM_AGENT}' \"$@\"\n",
            fast = fast.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The orchestrator binary's configuration file.
fn write_config(
    root: &Path,
    db: &TestDb,
    nats: &TestNats,
    scheduler: &str,
    id: OrchestratorId,
    agent: &Path,
) -> PathBuf {
    let schema = db
        .schema
        .as_ref()
        .map(|s| format!("schema = \"{s}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"
[server]
http_addr = "127.0.0.1:0"
grpc_addr = "127.0.0.1:0"
shutdown_grace = "2s"

[database]
url = "{url}"
max_connections = 3
{schema}
[bus]
kind = "nats"
url = "{nats_url}"
stream_name = "{stream}"
subject_prefix = "{prefix}"

[telemetry]
log_format = "pretty"
log_level = "info"

[sessions]
worktrees_dir = "{root}/worktrees"
homes_dir = "{root}/homes"
cache_dir = "{root}/cache"
keep_failed_for = "0s"
allow_local_repositories = true
sim_agent_path = "{agent}"
landlock = false
interrupt_wait = "2s"
term_wait = "1s"

[intake]
enabled = true
scheduler_endpoint = "{scheduler}"
orchestrator_id = "{id}"
capacity = 4
heartbeat_interval = "200ms"
lease_heartbeat_interval = "200ms"
reconcile_interval = "300ms"
report_backoff_max = "200ms"
drain_timeout = "5s"

[keys]
backend = "local"

[keys.local]
path = "{root}/kek"
create_if_missing = true
"#,
        url = db.url,
        nats_url = nats.url,
        stream = nats.stream_name,
        prefix = nats.subject_prefix,
        root = root.display(),
        agent = agent.display(),
    );
    let path = root.join("orchestrator.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_orchestrator(config: &Path, log: &Path) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    tokio::process::Command::new(ORCHESTRATOR)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Prints the orchestrator's log when the test fails.
struct ShowLog(PathBuf);

impl Drop for ShowLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "orchestrator log:\n{}",
                std::fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

async fn sessions_of(sessions: &Sessions, team: TeamId, task: TaskId) -> Vec<Session> {
    let filter = ListFilter {
        task: Some(task),
        ..ListFilter::default()
    };
    // Empty until the orchestrator created its tables.
    let mut found = sessions
        .list(team, &filter, 100)
        .await
        .map(|page| page.sessions)
        .unwrap_or_default();
    found.sort_by_key(|s| s.epoch);
    found
}

async fn orchestrator_survives_kill_9(kind: DbKind) {
    let nats = TestNats::new().await;
    let scheduler_db = TestDb::postgres().await;
    let orchestrator_db = TestDb::of(kind).await;
    let bus = BusConfig::nats(&nats.url, &nats.stream_name, &nats.subject_prefix);
    let deps = godel_orchestrator::Dependencies::connect(&bus)
        .await
        .unwrap();
    let shutdown_scheduler = CancellationToken::new();
    let scheduler_service = godel_scheduler::start(
        SchedulerConfig {
            server: godel_runtime::ServerConfig::local(),
            database: database(&scheduler_db),
            bus: bus.clone(),
            queue: QueueConfig {
                default_lease_duration: Duration::from_secs(30),
                sweep_interval: Duration::from_millis(50),
                retry_backoff_base: Duration::from_millis(20),
                retry_backoff_max: Duration::from_millis(100),
                dispatch: true,
                dispatch_interval: Duration::from_millis(20),
                leader_ttl: Duration::from_millis(900),
                ..QueueConfig::default()
            },
            ..SchedulerConfig::default()
        },
        deps,
        shutdown_scheduler.clone(),
    )
    .await
    .unwrap();
    let endpoint = format!("http://{}", scheduler_service.grpc_addr());
    let mut scheduler = SchedulerServiceClient::connect(endpoint.clone())
        .await
        .unwrap();

    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    init_repo(&repo);
    let agent = write_agent(root.path());
    let id = OrchestratorId::new();
    let config = write_config(root.path(), &orchestrator_db, &nats, &endpoint, id, &agent);
    let log = root.path().join("orchestrator.log");
    let _show = ShowLog(log.clone());
    let mut first = spawn_orchestrator(&config, &log);

    // A read-only view of the orchestrator's sessions through its database.
    let db = godel_store::connect(&database(&orchestrator_db))
        .await
        .unwrap();
    let relay = godel_store::OutboxRelay::new(
        db.clone(),
        Arc::new(MemoryBus::default()),
        godel_store::RelayConfig::new("test"),
    );
    let sessions_config = SessionsConfig {
        worktrees_dir: root.path().join("worktrees"),
        homes_dir: root.path().join("homes"),
        ..SessionsConfig::default()
    };
    let sessions = Sessions::new(db, relay.notifier(), sessions_config, id);

    let team = TeamId::new();
    let payload = json!({
        "repository": {"url": repo.display().to_string(), "ref": "main"},
        "adapter": "sim",
        "prompt": "change something",
        "sim": {"edits": 1, "duration_ms": 600_000},
    });
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let task = scheduler
            .submit_task(pb::SubmitTaskRequest {
                team_id: team.to_string(),
                task: Some(pb::TaskSpec {
                    task_type: "code.change".into(),
                    payload_json: payload.to_string(),
                    max_attempts: 3,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        tasks.push(task.id.parse::<TaskId>().unwrap());
    }

    // Both agents run.
    let mut running = Vec::new();
    for task in &tasks {
        let session = eventually("the task's session runs its agent", WAIT, || {
            let sessions = sessions.clone();
            let task = *task;
            async move {
                let found = sessions_of(&sessions, team, task).await;
                found
                    .into_iter()
                    .find(|s| s.state == SessionState::Running && !processes_of(s.id).is_empty())
            }
        })
        .await;
        running.push(session);
    }
    let orphans: Vec<Vec<i32>> = running.iter().map(|s| processes_of(s.id)).collect();

    first.start_kill().unwrap();
    let status = first.wait().await.unwrap();
    assert!(!status.success(), "the orchestrator was killed: {status:?}");
    for (session, pids) in running.iter().zip(&orphans) {
        let left = processes_of(session.id);
        assert!(
            !left.is_empty() && pids.iter().all(|pid| left.contains(pid)),
            "the agent of {} outlives its orchestrator (an orphan): {pids:?} vs {left:?}",
            session.id
        );
    }

    // A worktree no session accounts for, registered in the repository.
    let stray_id = SessionId::new();
    let stray = root.path().join("worktrees").join(stray_id.to_string());
    git(
        &repo,
        &[
            "worktree",
            "add",
            "--quiet",
            "--detach",
            stray.to_str().unwrap(),
            "main",
        ],
    );
    assert!(stray.exists());
    // Retries run briefly.
    std::fs::write(root.path().join("fast"), b"").unwrap();

    let mut second = spawn_orchestrator(&config, &log);

    for (session, pids) in running.iter().zip(&orphans) {
        eventually("the orphaned agent is gone", WAIT, || {
            let id = session.id;
            async move { processes_of(id).is_empty().then_some(()) }
        })
        .await;
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z ")),
                "process {pid} of the killed run's agent is gone"
            );
        }
    }
    for task in &tasks {
        let done = eventually("the task succeeds on its retry", WAIT, || {
            let mut scheduler = scheduler.clone();
            let task = *task;
            async move {
                let task = scheduler
                    .get_task(pb::GetTaskRequest {
                        team_id: team.to_string(),
                        task_id: task.to_string(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .task
                    .unwrap();
                (task.state() == pb::TaskState::Succeeded).then_some(task)
            }
        })
        .await;
        assert_eq!(done.attempts, 2, "leased exactly once more: {done:?}");
        assert_eq!(done.epoch, 2, "{done:?}");
        let found = sessions_of(&sessions, team, *task).await;
        let states: Vec<(u64, SessionState)> = found.iter().map(|s| (s.epoch, s.state)).collect();
        assert_eq!(
            states,
            [(1, SessionState::Lost), (2, SessionState::Succeeded)],
            "the killed run's session is lost, the retry succeeded"
        );
        let lost = &found[0];
        assert!(
            lost.error
                .as_deref()
                .is_some_and(|e| e.contains("orphaned agent was killed")),
            "{:?}",
            lost.error
        );
        let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
        assert_eq!(result["session_id"], found[1].id.to_string());
    }

    // Stray worktrees (the unknown one, the lost sessions' with no time to keep)
    // are removed and pruned from the repository.
    eventually("stray worktrees are removed", WAIT, || {
        let stray = stray.clone();
        let lost: Vec<PathBuf> = running
            .iter()
            .map(|s| root.path().join("worktrees").join(s.id.to_string()))
            .collect();
        async move { (!stray.exists() && lost.iter().all(|p| !p.exists())).then_some(()) }
    })
    .await;
    let listed = git(&repo, &["worktree", "list", "--porcelain"]);
    assert!(!listed.contains(&stray_id.to_string()), "{listed}");
    for session in &running {
        assert!(!listed.contains(&session.id.to_string()), "{listed}");
        assert!(
            !root
                .path()
                .join("homes")
                .join(session.id.to_string())
                .exists()
        );
    }

    // A clean stop this time.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(second.id().unwrap()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = second.wait().await.unwrap();
    assert!(
        status.success(),
        "{status:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    shutdown_scheduler.cancel();
    scheduler_service.wait().await.unwrap();
    nats.cleanup().await;
    scheduler_db.cleanup().await;
    orchestrator_db.cleanup().await;
}

#[tokio::test]
async fn orchestrator_survives_kill_9_sqlite() {
    orchestrator_survives_kill_9(DbKind::Sqlite).await;
}

#[tokio::test]
async fn orchestrator_survives_kill_9_postgres() {
    orchestrator_survives_kill_9(DbKind::Postgres).await;
}
