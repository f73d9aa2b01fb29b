//! Plans as one unit, end to end: a real scheduler and a real orchestrator (intake
//! on) over PostgreSQL and NATS, running the simulated agent. Plan tasks start from
//! the plan's integration branch `godel/plan-<id>`, pass the quality gate and are
//! merged onto it; a failed gate or a merge conflict fails the task for good, the
//! scheduler cancels the rest of the plan and the orchestrator resets the branch to
//! the plan's base — the repository's own `main` never moves. RollbackPlan does the
//! same on demand.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::time::Duration;

use godel_orchestrator::{Dependencies, IntakeConfig, OrchestratorConfig, SessionsConfig};
use godel_proto::orchestrator::v1 as opb;
use godel_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_scheduler::{QueueConfig, SchedulerConfig};
use godel_store::DatabaseConfig;
use godel_test_utils::eventually;
use godel_test_utils::git::{git, init_repo};
use godel_test_utils::identity::{Authed, TestIssuer, authed};
use godel_test_utils::nats::TestNats;
use godel_test_utils::postgres::{DbKind, TestDb};
use godel_types::TeamId;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SIM_AGENT: &str = env!("CARGO_BIN_EXE_godel-sim-agent");
const WAIT: Duration = Duration::from_secs(90);

fn database(test_db: &TestDb) -> DatabaseConfig {
    DatabaseConfig {
        url: test_db.url.clone().into(),
        schema: test_db.schema.clone(),
        max_connections: 4,
        ..DatabaseConfig::default()
    }
}

struct Harness {
    scheduler: SchedulerServiceClient<Channel>,
    orchestrator: OrchestratorServiceClient<Authed>,
    shutdown_orchestrator: CancellationToken,
    shutdown_scheduler: CancellationToken,
    running: Vec<godel_runtime::RunningService>,
    team: TeamId,
    repo: PathBuf,
    /// The commit the plans start from (`main`).
    base: String,
    _root: tempfile::TempDir,
    nats: TestNats,
    dbs: Vec<TestDb>,
}

impl Harness {
    async fn new() -> Self {
        let scheduler_db = TestDb::of(DbKind::Postgres).await;
        let orchestrator_db = TestDb::of(DbKind::Postgres).await;
        let nats = TestNats::new().await;
        let bus_config =
            godel_bus::BusConfig::nats(&nats.url, &nats.stream_name, &nats.subject_prefix);
        let scheduler_deps = Dependencies::connect(&bus_config).await.unwrap();
        let orchestrator_deps = Dependencies::connect(&bus_config).await.unwrap();
        let shutdown_scheduler = CancellationToken::new();
        let scheduler_config = SchedulerConfig {
            server: godel_runtime::ServerConfig::local(),
            database: database(&scheduler_db),
            bus: bus_config.clone(),
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
        };
        let scheduler_service =
            godel_scheduler::start(scheduler_config, scheduler_deps, shutdown_scheduler.clone())
                .await
                .unwrap();
        let endpoint = format!("http://{}", scheduler_service.grpc_addr());
        let scheduler = SchedulerServiceClient::connect(endpoint.clone())
            .await
            .unwrap();

        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        let base = init_repo(&repo);
        let config = OrchestratorConfig {
            server: godel_runtime::ServerConfig::local(),
            database: database(&orchestrator_db),
            bus: bus_config,
            sessions: SessionsConfig {
                worktrees_dir: root.path().join("worktrees"),
                homes_dir: root.path().join("homes"),
                cache_dir: root.path().join("cache"),
                allow_local_repositories: true,
                sim_agent_path: PathBuf::from(SIM_AGENT),
                interrupt_wait: Duration::from_secs(5),
                term_wait: Duration::from_secs(2),
                ..SessionsConfig::default()
            },
            intake: IntakeConfig {
                enabled: true,
                scheduler_endpoint: endpoint,
                orchestrator_id: Some(godel_types::OrchestratorId::new()),
                capacity: 4,
                heartbeat_interval: Duration::from_millis(200),
                lease_heartbeat_interval: Duration::from_millis(200),
                reconcile_interval: Duration::from_millis(300),
                report_backoff_max: Duration::from_millis(200),
                ..IntakeConfig::default()
            },
            ..OrchestratorConfig::default()
        };
        let issuer = TestIssuer::new();
        let shutdown_orchestrator = CancellationToken::new();
        let orchestrator_service = godel_orchestrator::start_with_verifier(
            config,
            orchestrator_deps,
            issuer.verifier(),
            shutdown_orchestrator.clone(),
        )
        .await
        .unwrap();
        let team = TeamId::new();
        let orchestrator = OrchestratorServiceClient::new(
            authed(
                &format!("http://{}", orchestrator_service.grpc_addr()),
                &issuer.team_admin(team),
            )
            .await,
        );
        Self {
            scheduler,
            orchestrator,
            shutdown_orchestrator,
            shutdown_scheduler,
            running: vec![orchestrator_service, scheduler_service],
            team,
            repo,
            base,
            _root: root,
            nats,
            dbs: vec![scheduler_db, orchestrator_db],
        }
    }

    /// A plan task's payload: the simulated agent writing one file under `dir`.
    fn payload(&self, dir: &str, extra: Value) -> Value {
        let mut payload = json!({
            "repository": {"url": self.repo.display().to_string(), "ref": "main"},
            "adapter": "sim",
            "prompt": "change something",
            "sim": {"edits": 1, "duration_ms": 100, "dir": dir},
            "plan": {"base": self.base, "run_gate": true},
        });
        if let (Some(payload), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
            for (key, value) in extra {
                match (payload.get_mut(key), value) {
                    (Some(Value::Object(into)), Value::Object(from)) => {
                        into.extend(from.clone());
                    }
                    _ => {
                        payload.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        payload
    }

    /// Submits a plan of `(key, payload, depends_on)`; returns its id and task ids
    /// by key.
    async fn submit(
        &mut self,
        tasks: Vec<(&str, Value, Vec<&str>)>,
    ) -> (String, std::collections::HashMap<String, String>) {
        let response = self
            .scheduler
            .submit_plan(pb::SubmitPlanRequest {
                team_id: self.team.to_string(),
                name: "plan".into(),
                idempotency_key: String::new(),
                tasks: tasks
                    .into_iter()
                    .map(|(key, payload, deps)| pb::PlanTaskSpec {
                        key: key.into(),
                        task: Some(pb::TaskSpec {
                            task_type: "code.change".into(),
                            payload_json: payload.to_string(),
                            max_attempts: 3,
                            ..Default::default()
                        }),
                        depends_on: deps.into_iter().map(str::to_owned).collect(),
                    })
                    .collect(),
            })
            .await
            .unwrap()
            .into_inner();
        let plan = response.plan.unwrap().id;
        let ids = response
            .tasks
            .into_iter()
            .map(|t| {
                let task = t.task.unwrap();
                (task.plan_key, task.id)
            })
            .collect();
        (plan, ids)
    }

    /// Waits until the plan reached `state`; returns its tasks by key.
    async fn plan_in(
        &mut self,
        plan: &str,
        state: pb::PlanState,
    ) -> std::collections::HashMap<String, pb::Task> {
        let client = self.scheduler.clone();
        let team = self.team.to_string();
        let plan = plan.to_owned();
        eventually(&format!("plan {plan} is {state:?}"), WAIT, || {
            let mut client = client.clone();
            let (team, plan) = (team.clone(), plan.clone());
            async move {
                let detail = client
                    .get_plan(pb::GetPlanRequest {
                        team_id: team,
                        plan_id: plan,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (detail.plan.unwrap().state() == state).then(|| {
                    detail
                        .tasks
                        .into_iter()
                        .map(|t| {
                            let task = t.task.unwrap();
                            (task.plan_key.clone(), task)
                        })
                        .collect()
                })
            }
        })
        .await
    }

    async fn integration(&mut self, plan: &str) -> opb::GetPlanIntegrationResponse {
        self.orchestrator
            .get_plan_integration(opb::GetPlanIntegrationRequest {
                team_id: self.team.to_string(),
                plan_id: plan.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until the plan's integration is `state` (rollback follows the plan's
    /// end asynchronously).
    async fn integration_in(&mut self, plan: &str, state: &str) -> opb::GetPlanIntegrationResponse {
        let client = self.orchestrator.clone();
        let team = self.team.to_string();
        let plan = plan.to_owned();
        eventually(
            &format!("plan {plan}'s integration is {state}"),
            WAIT,
            || {
                let mut client = client.clone();
                let (team, plan) = (team.clone(), plan.clone());
                async move {
                    let got = client
                        .get_plan_integration(opb::GetPlanIntegrationRequest {
                            team_id: team,
                            plan_id: plan,
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    (got.state == state).then_some(got)
                }
            },
        )
        .await
    }

    fn rev(&self, rev: &str) -> String {
        git(&self.repo, &["rev-parse", rev])
    }

    fn files_at(&self, rev: &str) -> Vec<String> {
        git(&self.repo, &["ls-tree", "-r", "--name-only", rev])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn stop(mut self) {
        self.shutdown_orchestrator.cancel();
        self.shutdown_scheduler.cancel();
        for running in self.running.drain(..) {
            running.wait().await.unwrap();
        }
        self.nats.cleanup().await;
        for db in self.dbs.drain(..) {
            db.cleanup().await;
        }
    }
}

fn result(task: &pb::Task) -> Value {
    serde_json::from_str(&task.result_json).unwrap()
}

/// Two parallel nodes edit different directories, a third depends on both: its
/// gate (run in its worktree) sees both edits, and all three end merged on the
/// plan's integration branch while `main` stays where it was.
#[tokio::test]
async fn a_plan_merges_its_nodes_onto_the_integration_branch() {
    let mut h = Harness::new().await;
    let main_before = h.rev("main");
    let both = "test -f sim/api/file-0.txt && test -f sim/ui/file-0.txt";
    let tasks = vec![
        (
            "api",
            h.payload(
                "sim/api",
                json!({"gate": {"command": "test -f sim/api/file-0.txt"}}),
            ),
            vec![],
        ),
        (
            "ui",
            h.payload(
                "sim/ui",
                json!({"gate": {"command": "test -f sim/ui/file-0.txt"}}),
            ),
            vec![],
        ),
        (
            "test",
            h.payload("sim/test", json!({"gate": {"command": both}})),
            vec!["api", "ui"],
        ),
    ];
    let (plan, ids) = h.submit(tasks).await;
    let tasks = h.plan_in(&plan, pb::PlanState::Succeeded).await;

    let branch = format!("godel/plan-{plan}");
    let head = h.rev(&branch);
    let files = h.files_at(&branch);
    for file in [
        "sim/api/file-0.txt",
        "sim/ui/file-0.txt",
        "sim/test/file-0.txt",
    ] {
        assert!(files.contains(&file.to_owned()), "{file} in {files:?}");
    }
    assert_eq!(h.rev("main"), main_before, "main never moves");

    // The test node's gate checked for both edits in its own worktree, and passed.
    let test = result(&tasks["test"]);
    assert_eq!(test["gate"]["passed"], true, "{test}");
    assert_eq!(test["gate"]["command"], both);
    assert_eq!(test["merge"]["branch"], branch.as_str());
    assert_eq!(
        test["merge"]["commit"],
        head.as_str(),
        "the last merge is the head"
    );
    // It started from the integration branch: its base holds both edits.
    let test_base = test["base_commit"].as_str().unwrap().to_owned();
    let base_files = h.files_at(&test_base);
    assert!(
        base_files.contains(&"sim/api/file-0.txt".to_owned()),
        "{base_files:?}"
    );
    assert!(
        base_files.contains(&"sim/ui/file-0.txt".to_owned()),
        "{base_files:?}"
    );

    let integration = h.integration(&plan).await;
    assert_eq!(integration.state, "open");
    assert_eq!(integration.branch, branch);
    assert_eq!(integration.base_commit, h.base);
    assert_eq!(integration.head_commit, head);
    let mut merged = integration.merged_task_ids.clone();
    merged.sort();
    let mut expected: Vec<String> = ids.values().cloned().collect();
    expected.sort();
    assert_eq!(merged, expected);
    assert_eq!(integration.merged_task_ids.last(), Some(&ids["test"]));
    h.stop().await;
}

/// A failing gate fails its node for good with the gate's output, the rest of the
/// plan is cancelled, and the integration branch goes back to the plan's base
/// (though an earlier node was merged onto it); `main` is untouched.
#[tokio::test]
async fn a_failed_gate_fails_the_plan_and_rolls_it_back() {
    let mut h = Harness::new().await;
    let main_before = h.rev("main");
    let tasks = vec![
        (
            "first",
            h.payload("sim/first", json!({"plan": {"run_gate": false}})),
            vec![],
        ),
        (
            "broken",
            h.payload(
                "sim/broken",
                json!({"gate": {"command": "echo checking; test -f MISSING"}}),
            ),
            vec!["first"],
        ),
        (
            "slow",
            h.payload("sim/slow", json!({"sim": {"duration_ms": 60000}})),
            vec!["first"],
        ),
        ("after", h.payload("sim/after", json!({})), vec!["broken"]),
    ];
    let (plan, _) = h.submit(tasks).await;
    let tasks = h.plan_in(&plan, pb::PlanState::Failed).await;

    let broken = &tasks["broken"];
    assert_eq!(broken.state(), pb::TaskState::DeadLettered, "{broken:?}");
    assert_eq!(broken.attempts, 1, "a failed gate is not retried");
    assert!(
        broken.last_error.contains("test -f MISSING"),
        "{}",
        broken.last_error
    );
    assert!(
        broken.last_error.contains("checking"),
        "{}",
        broken.last_error
    );
    assert_eq!(tasks["first"].state(), pb::TaskState::Succeeded);
    for key in ["slow", "after"] {
        assert_eq!(tasks[key].state(), pb::TaskState::Cancelled, "{key}");
        assert!(
            tasks[key].last_error.contains(&broken.id),
            "{key}: {}",
            tasks[key].last_error
        );
    }

    let integration = h.integration_in(&plan, "rolled_back").await;
    assert_eq!(integration.merged_task_ids, vec![tasks["first"].id.clone()]);
    assert_eq!(integration.head_commit, h.base);
    assert_eq!(h.rev(&format!("godel/plan-{plan}")), h.base);
    assert_eq!(h.rev("main"), main_before);
    h.stop().await;
}

/// Two parallel nodes writing the same file: the second merge conflicts, naming
/// the file, and fails its task for good; the plan fails and is rolled back.
#[tokio::test]
async fn conflicting_nodes_fail_the_second_merge() {
    let mut h = Harness::new().await;
    let tasks = vec![
        ("left", h.payload("sim/same", json!({})), vec![]),
        ("right", h.payload("sim/same", json!({})), vec![]),
    ];
    let (plan, _) = h.submit(tasks).await;
    let tasks = h.plan_in(&plan, pb::PlanState::Failed).await;
    let failed: Vec<&pb::Task> = tasks
        .values()
        .filter(|t| t.state() == pb::TaskState::DeadLettered)
        .collect();
    assert_eq!(failed.len(), 1, "{tasks:?}");
    let error = &failed[0].last_error;
    assert!(error.contains("conflicts in"), "{error}");
    assert!(error.contains("sim/same/file-0.txt"), "{error}");
    assert_eq!(failed[0].attempts, 1, "a conflict is not retried");

    let integration = h.integration_in(&plan, "rolled_back").await;
    assert_eq!(integration.merged_task_ids.len(), 1, "{integration:?}");
    assert_eq!(h.rev(&format!("godel/plan-{plan}")), h.base);
    h.stop().await;
}

/// RollbackPlan cancels the plan's unfinished tasks, stops its running session and
/// resets the branch, once: a second call changes nothing.
#[tokio::test]
async fn rollback_plan_on_demand() {
    let mut h = Harness::new().await;
    let tasks = vec![
        ("quick", h.payload("sim/quick", json!({})), vec![]),
        (
            "long",
            h.payload("sim/long", json!({"sim": {"duration_ms": 120000}})),
            vec![],
        ),
    ];
    let (plan, ids) = h.submit(tasks).await;
    let quick = ids["quick"].clone();
    let client = h.orchestrator.clone();
    let team = h.team.to_string();
    let plan_id = plan.clone();
    let merged = eventually("the quick node is merged", WAIT, || {
        let mut client = client.clone();
        let (team, plan) = (team.clone(), plan_id.clone());
        let quick = quick.clone();
        async move {
            let got = client
                .get_plan_integration(opb::GetPlanIntegrationRequest {
                    team_id: team,
                    plan_id: plan,
                })
                .await
                .ok()?
                .into_inner();
            got.merged_task_ids.contains(&quick).then_some(got)
        }
    })
    .await;
    assert_ne!(merged.head_commit, h.base);

    let reply = h
        .orchestrator
        .rollback_plan(opb::RollbackPlanRequest {
            team_id: h.team.to_string(),
            plan_id: plan.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.rolled_back);
    assert_eq!(reply.base_commit, h.base);
    assert_eq!(reply.branch, format!("godel/plan-{plan}"));
    assert_eq!(h.rev(&reply.branch), h.base);

    let tasks = h.plan_in(&plan, pb::PlanState::Cancelled).await;
    assert_eq!(tasks["long"].state(), pb::TaskState::Cancelled);
    assert!(tasks["long"].last_error.contains("changed my mind"));
    let integration = h.integration(&plan).await;
    assert_eq!(integration.state, "rolled_back");
    assert_eq!(integration.head_commit, h.base);

    let again = h
        .orchestrator
        .rollback_plan(opb::RollbackPlanRequest {
            team_id: h.team.to_string(),
            plan_id: plan.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.rolled_back);

    // Another team sees no such plan.
    let status = h
        .orchestrator
        .get_plan_integration(opb::GetPlanIntegrationRequest {
            team_id: TeamId::new().to_string(),
            plan_id: plan.clone(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::PermissionDenied | tonic::Code::NotFound
        ),
        "{status:?}"
    );
    h.stop().await;
}

/// A plan cancelled at the scheduler (not through the orchestrator) is rolled back
/// by the orchestrator on the scheduler's `plan.cancelled` event, and its running
/// session is stopped.
#[tokio::test]
async fn a_plan_cancelled_at_the_scheduler_is_rolled_back() {
    let mut h = Harness::new().await;
    let tasks = vec![
        ("quick", h.payload("sim/quick", json!({})), vec![]),
        (
            "long",
            h.payload("sim/long", json!({"sim": {"duration_ms": 120000}})),
            vec![],
        ),
    ];
    let (plan, ids) = h.submit(tasks).await;
    let quick = ids["quick"].clone();
    let client = h.orchestrator.clone();
    let team = h.team.to_string();
    let plan_id = plan.clone();
    eventually("the quick node is merged", WAIT, || {
        let mut client = client.clone();
        let (team, plan) = (team.clone(), plan_id.clone());
        let quick = quick.clone();
        async move {
            let got = client
                .get_plan_integration(opb::GetPlanIntegrationRequest {
                    team_id: team,
                    plan_id: plan,
                })
                .await
                .ok()?
                .into_inner();
            got.merged_task_ids.contains(&quick).then_some(())
        }
    })
    .await;
    assert_ne!(h.rev(&format!("godel/plan-{plan}")), h.base);

    let cancelled = h
        .scheduler
        .cancel_plan(pb::CancelPlanRequest {
            team_id: h.team.to_string(),
            plan_id: plan.clone(),
            reason: "cancelled at the scheduler".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.plan.unwrap().state(), pb::PlanState::Cancelled);

    let integration = h.integration_in(&plan, "rolled_back").await;
    assert_eq!(integration.head_commit, h.base);
    assert_eq!(h.rev(&format!("godel/plan-{plan}")), h.base);
    h.stop().await;
}

/// A standalone task with a gate runs it after the agent succeeded: a passing gate
/// is in the result, a failing one fails the task for good with its output.
#[tokio::test]
async fn a_standalone_task_runs_its_gate() {
    let mut h = Harness::new().await;
    let submit = async |h: &mut Harness, gate: &str| -> String {
        let mut payload = h.payload("sim/solo", json!({"gate": {"command": gate}}));
        if let Some(payload) = payload.as_object_mut() {
            payload.remove("plan");
        }
        h.scheduler
            .submit_task(pb::SubmitTaskRequest {
                team_id: h.team.to_string(),
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
            .unwrap()
            .id
    };
    let good = submit(&mut h, "test -f sim/solo/file-0.txt").await;
    let bad = submit(&mut h, "echo nope >&2; exit 3").await;
    let client = h.scheduler.clone();
    let team = h.team.to_string();
    let finished = |id: String| {
        let client = client.clone();
        let team = team.clone();
        async move {
            eventually(&format!("task {id} finished"), WAIT, || {
                let mut client = client.clone();
                let (team, id) = (team.clone(), id.clone());
                async move {
                    let task = client
                        .get_task(pb::GetTaskRequest {
                            team_id: team,
                            task_id: id,
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .task
                        .unwrap();
                    matches!(
                        task.state(),
                        pb::TaskState::Succeeded | pb::TaskState::DeadLettered
                    )
                    .then_some(task)
                }
            })
            .await
        }
    };
    let good = finished(good).await;
    assert_eq!(good.state(), pb::TaskState::Succeeded, "{good:?}");
    let result = result(&good);
    assert_eq!(result["gate"]["passed"], true, "{result}");
    assert!(result["merge"].is_null(), "no plan, no merge: {result}");
    let bad = finished(bad).await;
    assert_eq!(bad.state(), pb::TaskState::DeadLettered, "{bad:?}");
    assert_eq!(bad.attempts, 1);
    assert!(bad.last_error.contains("exit 3"), "{}", bad.last_error);
    assert!(bad.last_error.contains("nope"), "{}", bad.last_error);
    h.stop().await;
}
