//! Work intake end to end: a real scheduler (`godel_scheduler::start`) and a real
//! orchestrator with intake on, sharing one bus (in-process with SQLite, NATS with
//! PostgreSQL). Tasks submitted over the scheduler's gRPC run the simulated agent in
//! worktrees of a temporary repository and end as the scheduler records them.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use godel_bus::{BusConfig, MemoryBus};
use godel_orchestrator::session::{ListFilter, SessionState, Sessions};
use godel_orchestrator::{Dependencies, IntakeConfig, OrchestratorConfig, SessionsConfig};
use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_scheduler::{QueueConfig, SchedulerConfig};
use godel_store::DatabaseConfig;
use godel_test_utils::eventually;
use godel_test_utils::git::{git, init_repo};
use godel_test_utils::nats::TestNats;
use godel_test_utils::postgres::{DbKind, TestDb};
use godel_types::{OrchestratorId, TaskId, TeamId};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SIM_AGENT: &str = env!("CARGO_BIN_EXE_godel-sim-agent");
const WAIT: Duration = Duration::from_secs(60);

fn database(test_db: &TestDb) -> DatabaseConfig {
    DatabaseConfig {
        url: test_db.url.clone().into(),
        schema: test_db.schema.clone(),
        max_connections: 3,
        ..DatabaseConfig::default()
    }
}

/// How fast leases expire and the orchestrator heartbeats and reconciles.
#[derive(Clone, Copy)]
struct Timing {
    /// The scheduler's lease duration.
    lease: Duration,
    lease_heartbeat: Duration,
    /// Of the orchestrator's registration.
    heartbeat: Duration,
    reconcile: Duration,
    /// Whether the scheduler pushes work (else it is only leased on request).
    dispatch: bool,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            lease_heartbeat: Duration::from_millis(200),
            heartbeat: Duration::from_millis(200),
            reconcile: Duration::from_millis(300),
            dispatch: true,
        }
    }
}

struct Harness {
    scheduler: SchedulerServiceClient<Channel>,
    shutdown_orchestrator: CancellationToken,
    shutdown_scheduler: CancellationToken,
    scheduler_config: SchedulerConfig,
    scheduler_deps: Dependencies,
    orchestrator: Option<godel_runtime::RunningService>,
    scheduler_service: Option<godel_runtime::RunningService>,
    orchestrator_id: OrchestratorId,
    /// The orchestrator's sessions, read through its own database.
    sessions: Sessions,
    team: TeamId,
    repo: PathBuf,
    _root: tempfile::TempDir,
    nats: Option<TestNats>,
    dbs: Vec<TestDb>,
}

impl Harness {
    async fn new(kind: DbKind, timing: Timing) -> Self {
        let Timing {
            lease,
            lease_heartbeat,
            heartbeat,
            reconcile,
            dispatch,
        } = timing;
        let scheduler_db = TestDb::of(kind).await;
        let orchestrator_db = TestDb::of(kind).await;
        let nats = match kind {
            DbKind::Postgres => Some(TestNats::new().await),
            DbKind::Sqlite => None,
        };
        let bus_config = nats.as_ref().map_or_else(BusConfig::default, |n| {
            BusConfig::nats(&n.url, &n.stream_name, &n.subject_prefix)
        });
        let (scheduler_deps, orchestrator_deps) = match &nats {
            None => {
                let bus = Arc::new(MemoryBus::default());
                (Dependencies { bus: bus.clone() }, Dependencies { bus })
            }
            Some(_) => (
                Dependencies::connect(&bus_config).await.unwrap(),
                Dependencies::connect(&bus_config).await.unwrap(),
            ),
        };
        let shutdown_scheduler = CancellationToken::new();
        let scheduler_config = SchedulerConfig {
            server: godel_runtime::ServerConfig::local(),
            database: database(&scheduler_db),
            bus: bus_config.clone(),
            queue: QueueConfig {
                default_lease_duration: lease,
                sweep_interval: Duration::from_millis(50),
                retry_backoff_base: Duration::from_millis(20),
                retry_backoff_max: Duration::from_millis(100),
                dispatch,
                dispatch_interval: Duration::from_millis(20),
                leader_ttl: Duration::from_millis(900),
                ..QueueConfig::default()
            },
            ..SchedulerConfig::default()
        };
        let scheduler_service = godel_scheduler::start(
            scheduler_config.clone(),
            scheduler_deps.clone(),
            shutdown_scheduler.clone(),
        )
        .await
        .unwrap();
        let endpoint = format!("http://{}", scheduler_service.grpc_addr());
        let scheduler = SchedulerServiceClient::connect(endpoint.clone())
            .await
            .unwrap();

        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        init_repo(&repo);
        let orchestrator_id = OrchestratorId::new();
        let sessions_config = SessionsConfig {
            worktrees_dir: root.path().join("worktrees"),
            homes_dir: root.path().join("homes"),
            cache_dir: root.path().join("cache"),
            allow_local_repositories: true,
            sim_agent_path: PathBuf::from(SIM_AGENT),
            interrupt_wait: Duration::from_secs(5),
            term_wait: Duration::from_secs(2),
            ..SessionsConfig::default()
        };
        let config = OrchestratorConfig {
            server: godel_runtime::ServerConfig::local(),
            database: database(&orchestrator_db),
            bus: bus_config,
            sessions: sessions_config.clone(),
            intake: IntakeConfig {
                enabled: true,
                scheduler_endpoint: endpoint,
                orchestrator_id: Some(orchestrator_id),
                capacity: 4,
                heartbeat_interval: heartbeat,
                lease_heartbeat_interval: lease_heartbeat,
                reconcile_interval: reconcile,
                report_backoff_max: Duration::from_millis(200),
                ..IntakeConfig::default()
            },
            ..OrchestratorConfig::default()
        };
        let shutdown_orchestrator = CancellationToken::new();
        let orchestrator =
            godel_orchestrator::start(config, orchestrator_deps, shutdown_orchestrator.clone())
                .await
                .unwrap();
        // A second view of the orchestrator's sessions, for reading only.
        let db = godel_store::connect(&database(&orchestrator_db))
            .await
            .unwrap();
        let relay = godel_store::OutboxRelay::new(
            db.clone(),
            Arc::new(MemoryBus::default()),
            godel_store::RelayConfig::new("test"),
        );
        let sessions = Sessions::new(db, relay.notifier(), sessions_config, orchestrator_id);
        Self {
            scheduler,
            shutdown_orchestrator,
            shutdown_scheduler,
            scheduler_config,
            scheduler_deps,
            orchestrator: Some(orchestrator),
            scheduler_service: Some(scheduler_service),
            orchestrator_id,
            sessions,
            team: TeamId::new(),
            repo,
            _root: root,
            nats,
            dbs: vec![scheduler_db, orchestrator_db],
        }
    }

    async fn submit(&mut self, payload: serde_json::Value, max_attempts: u32) -> TaskId {
        let task = self
            .scheduler
            .submit_task(pb::SubmitTaskRequest {
                team_id: self.team.to_string(),
                task: Some(pb::TaskSpec {
                    task_type: "code.change".into(),
                    payload_json: payload.to_string(),
                    max_attempts,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        task.id.parse().unwrap()
    }

    async fn task(&mut self, id: TaskId) -> pb::Task {
        self.scheduler
            .get_task(pb::GetTaskRequest {
                team_id: self.team.to_string(),
                task_id: id.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
    }

    /// Waits until task `id` is in `state`.
    async fn task_in(&mut self, id: TaskId, state: pb::TaskState) -> pb::Task {
        let client = self.scheduler.clone();
        let team = self.team.to_string();
        eventually(&format!("task {id} is {state:?}"), WAIT, || {
            let mut client = client.clone();
            let team = team.clone();
            async move {
                let task = client
                    .get_task(pb::GetTaskRequest {
                        team_id: team,
                        task_id: id.to_string(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .task
                    .unwrap();
                (task.state() == state).then_some(task)
            }
        })
        .await
    }

    async fn sessions_of(&self, task: TaskId) -> Vec<godel_orchestrator::session::Session> {
        let filter = ListFilter {
            task: Some(task),
            ..ListFilter::default()
        };
        self.sessions
            .list(self.team, &filter, 100)
            .await
            .unwrap()
            .sessions
    }

    fn payload(&self, sim: serde_json::Value) -> serde_json::Value {
        json!({
            "repository": {"url": self.repo.display().to_string(), "ref": "main"},
            "adapter": "sim",
            "prompt": "change something",
            "sim": sim,
        })
    }

    /// Stops the scheduler (its clients see it unavailable).
    async fn stop_scheduler(&mut self) -> std::net::SocketAddr {
        self.shutdown_scheduler.cancel();
        let running = self.scheduler_service.take().unwrap();
        let addr = running.grpc_addr();
        running.wait().await.unwrap();
        addr
    }

    /// Starts the scheduler again on the same database, bus and gRPC address.
    async fn restart_scheduler(&mut self, grpc_addr: std::net::SocketAddr) {
        let mut config = self.scheduler_config.clone();
        config.server.grpc_addr = grpc_addr;
        self.shutdown_scheduler = CancellationToken::new();
        let running = godel_scheduler::start(
            config,
            self.scheduler_deps.clone(),
            self.shutdown_scheduler.clone(),
        )
        .await
        .unwrap();
        self.scheduler_service = Some(running);
    }

    async fn stop(mut self) {
        self.shutdown_orchestrator.cancel();
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.wait().await.unwrap();
        }
        self.shutdown_scheduler.cancel();
        if let Some(scheduler) = self.scheduler_service.take() {
            scheduler.wait().await.unwrap();
        }
        if let Some(nats) = self.nats.take() {
            nats.cleanup().await;
        }
        for db in self.dbs.drain(..) {
            db.cleanup().await;
        }
    }
}

/// A dispatched task runs as a session and the scheduler records it succeeded with
/// the session's result (commit on the task's branch, diff summary, usage); a
/// payload that describes no session fails its task for good.
async fn dispatched_task_runs_and_succeeds(kind: DbKind) {
    let mut h = Harness::new(kind, Timing::default()).await;
    let payload =
        h.payload(json!({"edits": 2, "tokens_in": 100, "tokens_out": 50, "duration_ms": 100}));
    let id = h.submit(payload, 3).await;
    let task = h.task_in(id, pb::TaskState::Succeeded).await;
    assert_eq!(task.epoch, 1);
    assert_eq!(task.lease_owner, h.orchestrator_id.to_string(), "{task:?}");
    let result: serde_json::Value = serde_json::from_str(&task.result_json).unwrap();
    let commit = result["commit"].as_str().expect("a commit in the result");
    assert_eq!(
        git(&h.repo, &["rev-parse", &format!("godel/{id}")]),
        commit,
        "the result names the commit on the task's branch"
    );
    assert!(
        result["diff"]["files_changed"].as_u64().unwrap() >= 1,
        "{result}"
    );
    assert_eq!(result["usage"]["input_tokens"], 100, "{result}");
    assert_eq!(result["usage"]["output_tokens"], 50, "{result}");
    let sessions = h.sessions_of(id).await;
    assert_eq!(sessions.len(), 1, "one session per task and epoch");
    assert_eq!(sessions[0].state, SessionState::Succeeded);
    assert_eq!(sessions[0].epoch, 1);
    assert_eq!(result["session_id"], sessions[0].id.to_string());

    // No repository: the task fails at once, without retries.
    let bad = h.submit(json!({"adapter": "sim"}), 3).await;
    let task = h.task_in(bad, pb::TaskState::DeadLettered).await;
    assert_eq!(task.attempts, 1, "{task:?}");
    assert!(task.last_error.contains("repository"), "{task:?}");
    assert!(h.sessions_of(bad).await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn dispatched_task_runs_and_succeeds_sqlite() {
    dispatched_task_runs_and_succeeds(DbKind::Sqlite).await;
}

#[tokio::test]
async fn dispatched_task_runs_and_succeeds_postgres() {
    dispatched_task_runs_and_succeeds(DbKind::Postgres).await;
}

/// A failing agent fails its task retryably: it runs again (a new epoch, a new
/// session) until its attempts are used up, then it is dead-lettered with the
/// sessions' error.
async fn failing_agent_is_retried_then_dead_lettered(kind: DbKind) {
    let mut h = Harness::new(kind, Timing::default()).await;
    let payload = h.payload(json!({"failure_rate": 1.0, "duration_ms": 50}));
    let id = h.submit(payload, 2).await;
    let task = h.task_in(id, pb::TaskState::DeadLettered).await;
    assert_eq!(task.attempts, 2, "{task:?}");
    assert_eq!(task.epoch, 2, "{task:?}");
    assert!(!task.last_error.is_empty(), "{task:?}");
    let dead = h
        .scheduler
        .get_dead_letter(pb::GetDeadLetterRequest {
            team_id: h.team.to_string(),
            task_id: id.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let errors = dead.dead_letter.unwrap().errors;
    assert_eq!(errors.len(), 2, "{errors:?}");
    for error in &errors {
        assert_eq!(error.code, "session_failed", "{error:?}");
        assert!(error.retryable, "{error:?}");
        assert_eq!(error.orchestrator_id, h.orchestrator_id.to_string());
    }
    let mut sessions = h.sessions_of(id).await;
    sessions.sort_by_key(|s| s.epoch);
    let states: Vec<(u64, SessionState)> = sessions.iter().map(|s| (s.epoch, s.state)).collect();
    assert_eq!(
        states,
        [(1, SessionState::Failed), (2, SessionState::Failed)],
        "one failed session per attempt"
    );
    assert_eq!(
        task.last_error,
        sessions[1].error.clone().unwrap(),
        "the scheduler keeps the session's error"
    );
    h.stop().await;
}

#[tokio::test]
async fn failing_agent_is_retried_then_dead_lettered_sqlite() {
    failing_agent_is_retried_then_dead_lettered(DbKind::Sqlite).await;
}

#[tokio::test]
async fn failing_agent_is_retried_then_dead_lettered_postgres() {
    failing_agent_is_retried_then_dead_lettered(DbKind::Postgres).await;
}

/// A lease that expires (heartbeats slower than the lease) is taken by another
/// orchestrator at a newer epoch: the session at the stale epoch is stopped — by
/// its refused lease heartbeat, or by reconciliation — and reports nothing, and the
/// task stays with its new owner.
async fn stale_epoch_stops_the_session(kind: DbKind, by_reconciliation: bool) {
    let timing = Timing {
        lease: Duration::from_secs(2),
        heartbeat: HOUR,
        ..if by_reconciliation {
            Timing {
                lease_heartbeat: HOUR,
                ..Timing::default()
            }
        } else {
            Timing {
                lease_heartbeat: Duration::from_secs(3),
                reconcile: HOUR,
                ..Timing::default()
            }
        }
    };
    let mut h = Harness::new(kind, timing).await;
    let payload = h.payload(json!({"duration_ms": 120_000}));
    let id = h.submit(payload, 5).await;
    let session = eventually("the session runs", WAIT, || async {
        h.sessions_of(id)
            .await
            .into_iter()
            .find(|s| s.state == SessionState::Running)
    })
    .await;
    assert_eq!(session.epoch, 1);
    // From now on only another orchestrator gets work: this one is marked draining
    // (its own heartbeat is slow enough not to undo that before the lease moves).
    let other = OrchestratorId::new();
    h.scheduler
        .register_orchestrator(pb::RegisterOrchestratorRequest {
            orchestrator_id: other.to_string(),
            capacity: 10,
            runtimes: vec!["process".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let other_holds = {
        let client = h.scheduler.clone();
        let team = h.team.to_string();
        let me = h.orchestrator_id.to_string();
        eventually("the task is leased to the other orchestrator", WAIT, || {
            let mut client = client.clone();
            let team = team.clone();
            let me = me.clone();
            async move {
                // Keep this orchestrator out of placement.
                client
                    .heartbeat_orchestrator(pb::HeartbeatOrchestratorRequest {
                        orchestrator_id: me,
                        capacity: 4,
                        active_sessions: 1,
                        draining: true,
                    })
                    .await
                    .unwrap();
                let task = client
                    .get_task(pb::GetTaskRequest {
                        team_id: team,
                        task_id: id.to_string(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .task
                    .unwrap();
                (task.lease_owner == other.to_string()).then_some(task)
            }
        })
        .await
    };
    assert_eq!(other_holds.epoch, 2);
    let stopped = eventually("the stale session is stopped", WAIT, || async {
        let s = h.sessions.get(h.team, session.id).await.unwrap();
        s.state.is_terminal().then_some(s)
    })
    .await;
    assert_eq!(stopped.state, SessionState::Cancelled, "{stopped:?}");
    assert!(
        stopped
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("lease"),
        "{stopped:?}"
    );
    let task = h.task(id).await;
    assert_eq!(
        task.lease_owner,
        other.to_string(),
        "nothing was reported at the stale epoch"
    );
    assert_eq!(task.epoch, 2);
    assert!(matches!(
        task.state(),
        pb::TaskState::Leased | pb::TaskState::Running
    ));
    h.stop().await;
}

#[tokio::test]
async fn stale_lease_heartbeat_stops_the_session_sqlite() {
    stale_epoch_stops_the_session(DbKind::Sqlite, false).await;
}

#[tokio::test]
async fn stale_lease_heartbeat_stops_the_session_postgres() {
    stale_epoch_stops_the_session(DbKind::Postgres, false).await;
}

#[tokio::test]
async fn reconciliation_stops_a_stale_session_sqlite() {
    stale_epoch_stops_the_session(DbKind::Sqlite, true).await;
}

#[tokio::test]
async fn reconciliation_stops_a_stale_session_postgres() {
    stale_epoch_stops_the_session(DbKind::Postgres, true).await;
}

/// Shutting down, the orchestrator drains: its running session is stopped and the
/// task handed back retryably, so it is queued again for another orchestrator.
async fn shutdown_hands_running_tasks_back(kind: DbKind) {
    let mut h = Harness::new(kind, Timing::default()).await;
    let payload = h.payload(json!({"duration_ms": 120_000}));
    let id = h.submit(payload, 5).await;
    let session = eventually("the session runs", WAIT, || async {
        h.sessions_of(id)
            .await
            .into_iter()
            .find(|s| s.state == SessionState::Running)
    })
    .await;
    h.shutdown_orchestrator.cancel();
    h.orchestrator.take().unwrap().wait().await.unwrap();
    let stopped = h.sessions.get(h.team, session.id).await.unwrap();
    assert_eq!(stopped.state, SessionState::Cancelled, "{stopped:?}");
    let task = h.task(id).await;
    assert_eq!(task.state(), pb::TaskState::Queued, "handed back: {task:?}");
    assert_eq!(task.attempts, 1, "{task:?}");
    assert!(task.last_error.contains("shut down"), "{task:?}");
    assert_eq!(task.lease_owner, "", "{task:?}");
    h.shutdown_orchestrator = CancellationToken::new();
    h.stop().await;
}

#[tokio::test]
async fn shutdown_hands_running_tasks_back_sqlite() {
    shutdown_hands_running_tasks_back(DbKind::Sqlite).await;
}

#[tokio::test]
async fn shutdown_hands_running_tasks_back_postgres() {
    shutdown_hands_running_tasks_back(DbKind::Postgres).await;
}

/// A session that ends while the scheduler is down is reported once it is back:
/// the report is retried until the scheduler accepts it.
async fn a_report_survives_a_scheduler_outage(kind: DbKind) {
    let mut h = Harness::new(kind, Timing::default()).await;
    let payload = h.payload(json!({"duration_ms": 1500, "edits": 1}));
    let id = h.submit(payload, 3).await;
    let session = eventually("the session runs", WAIT, || async {
        h.sessions_of(id)
            .await
            .into_iter()
            .find(|s| s.state == SessionState::Running)
    })
    .await;
    let addr = h.stop_scheduler().await;
    let ended = eventually(
        "the session ends while the scheduler is down",
        WAIT,
        || async {
            let s = h.sessions.get(h.team, session.id).await.unwrap();
            s.state.is_terminal().then_some(s)
        },
    )
    .await;
    assert_eq!(ended.state, SessionState::Succeeded, "{ended:?}");
    h.restart_scheduler(addr).await;
    let task = h.task_in(id, pb::TaskState::Succeeded).await;
    assert_eq!(task.epoch, 1);
    let result: serde_json::Value = serde_json::from_str(&task.result_json).unwrap();
    assert_eq!(result["session_id"], session.id.to_string());
    h.stop().await;
}

#[tokio::test]
async fn a_report_survives_a_scheduler_outage_sqlite() {
    a_report_survives_a_scheduler_outage(DbKind::Sqlite).await;
}

#[tokio::test]
async fn a_report_survives_a_scheduler_outage_postgres() {
    a_report_survives_a_scheduler_outage(DbKind::Postgres).await;
}

/// A session recorded under this orchestrator's id that no agent runs here (left
/// by an earlier process with the same id) while its lease is still held is found
/// by reconciliation, marked lost and its task handed back to be retried.
async fn reconciliation_reports_a_session_nothing_runs(kind: DbKind) {
    let mut h = Harness::new(
        kind,
        Timing {
            dispatch: false,
            ..Timing::default()
        },
    )
    .await;
    let payload = h.payload(json!({"duration_ms": 3000}));
    let id = h.submit(payload.clone(), 3).await;
    // Leased to this orchestrator by hand (no dispatch), and started by another
    // process using the same orchestrator id: the test's own sessions.
    let leased = h
        .scheduler
        .lease_tasks(pb::LeaseTasksRequest {
            orchestrator_id: h.orchestrator_id.to_string(),
            max_tasks: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].epoch, 1);
    let started = h
        .sessions
        .start(godel_orchestrator::session::StartSpec {
            team_id: h.team,
            task_id: id,
            epoch: 1,
            profile_id: None,
            adapter: Some("sim".into()),
            repository: godel_orchestrator::session::Repository {
                url: h.repo.display().to_string(),
                git_ref: None,
            },
            prompt: String::new(),
            task_type: "code.change".into(),
            payload,
            limits: Default::default(),
        })
        .await
        .unwrap();
    let lost = eventually("the orphaned session is marked lost", WAIT, || async {
        let s = h.sessions.get(h.team, started.session.id).await.unwrap();
        (s.state == SessionState::Lost).then_some(s)
    })
    .await;
    assert_eq!(lost.orchestrator_id, h.orchestrator_id);
    let task = h.task_in(id, pb::TaskState::Queued).await;
    assert_eq!(task.attempts, 1, "{task:?}");
    assert!(task.last_error.contains("session was lost"), "{task:?}");
    h.sessions.shutdown().await;
    h.stop().await;
}

#[tokio::test]
async fn reconciliation_reports_a_session_nothing_runs_sqlite() {
    reconciliation_reports_a_session_nothing_runs(DbKind::Sqlite).await;
}

#[tokio::test]
async fn reconciliation_reports_a_session_nothing_runs_postgres() {
    reconciliation_reports_a_session_nothing_runs(DbKind::Postgres).await;
}
