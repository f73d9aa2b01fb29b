//! The scheduler's gRPC API end to end: the service started with `start`, driven by a
//! real tonic client over SQLite and PostgreSQL.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use godel_error::{Error, ErrorCode};
use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_scheduler::{Dependencies, QueueConfig, SchedulerConfig};
use godel_store::DatabaseConfig;
use godel_test_utils::postgres::TestDb;
use godel_types::{OrchestratorId, TeamId};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

type Client = SchedulerServiceClient<Channel>;

fn spec(task_type: &str, priority: u32) -> pb::TaskSpec {
    pb::TaskSpec {
        task_type: task_type.into(),
        priority,
        payload_json: r#"{"n":1}"#.into(),
        ..Default::default()
    }
}

fn state(task: &pb::Task) -> pb::TaskState {
    task.state()
}

async fn submit(client: &mut Client, team: &str, spec: pb::TaskSpec) -> pb::Task {
    client
        .submit_task(pb::SubmitTaskRequest {
            team_id: team.into(),
            task: Some(spec),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
}

async fn lease(client: &mut Client, orc: &str, max: u32) -> Vec<pb::Task> {
    client
        .lease_tasks(pb::LeaseTasksRequest {
            orchestrator_id: orc.into(),
            max_tasks: max,
        })
        .await
        .unwrap()
        .into_inner()
        .tasks
}

async fn round_trip(test_db: TestDb) {
    let config = SchedulerConfig {
        server: godel_runtime::ServerConfig::local(),
        database: DatabaseConfig {
            url: test_db.url.clone().into(),
            schema: test_db.schema.clone(),
            ..DatabaseConfig::default()
        },
        queue: QueueConfig {
            max_queued_per_team: 4,
            backpressure_retry_after: Duration::from_secs(7),
            // Orchestrators pull here; push dispatch is tested in tests/dispatch.rs.
            dispatch: false,
            ..QueueConfig::default()
        },
        ..SchedulerConfig::default()
    };
    let deps = Dependencies {
        bus: godel_bus::connect(&Default::default()).await.unwrap(),
    };
    let shutdown = CancellationToken::new();
    let running = godel_scheduler::start(config, deps, shutdown.clone())
        .await
        .unwrap();
    let mut client = Client::connect(format!("http://{}", running.grpc_addr()))
        .await
        .unwrap();
    let team = TeamId::new().to_string();
    let orc = OrchestratorId::new().to_string();

    // Orchestrator registry.
    let registered = client
        .register_orchestrator(pb::RegisterOrchestratorRequest {
            orchestrator_id: orc.clone(),
            capacity: 10,
            runtimes: vec!["process".into()],
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            endpoint: "http://127.0.0.1:1".into(),
            version: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        registered.lease_duration,
        Some(godel_proto::convert::to_duration(
            QueueConfig::default().default_lease_duration
        ))
    );
    assert!(registered.heartbeat_interval.is_some());
    let beat = |id: String| pb::HeartbeatOrchestratorRequest {
        orchestrator_id: id,
        capacity: 10,
        active_sessions: 0,
        draining: false,
    };
    assert!(
        client
            .heartbeat_orchestrator(beat(orc.clone()))
            .await
            .unwrap()
            .into_inner()
            .registered
    );
    assert!(
        !client
            .heartbeat_orchestrator(beat(OrchestratorId::new().to_string()))
            .await
            .unwrap()
            .into_inner()
            .registered
    );

    // Submission, idempotency and validation.
    let mut keyed = spec("code.fix", 90);
    keyed.idempotency_key = "k1".into();
    keyed.labels = [("repo".to_owned(), "web".to_owned())].into();
    let profile = godel_types::ProfileId::new().to_string();
    keyed.profile_id = profile.clone();
    let first = client
        .submit_task(pb::SubmitTaskRequest {
            team_id: team.clone(),
            task: Some(keyed.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let again = client
        .submit_task(pb::SubmitTaskRequest {
            team_id: team.clone(),
            task: Some(keyed),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let t1 = first.task.unwrap();
    assert_eq!(again.task.unwrap().id, t1.id);
    assert_eq!(state(&t1), pb::TaskState::Queued);
    assert_eq!(t1.labels.get("repo").map(String::as_str), Some("web"));
    assert_eq!(t1.profile_id, profile);
    let mut bad_profile = spec("code.fix", 10);
    bad_profile.profile_id = "team_nope".into();
    let status = client
        .submit_task(pb::SubmitTaskRequest {
            team_id: team.clone(),
            task: Some(bad_profile),
        })
        .await
        .unwrap_err();
    assert_eq!(
        Error::from_status(&status).field.as_deref(),
        Some("task.profile_id")
    );

    let status = client
        .submit_task(pb::SubmitTaskRequest {
            team_id: team.clone(),
            task: Some(spec("code.fix", 101)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        Error::from_status(&status).field.as_deref(),
        Some("task.priority")
    );
    let mut not_object = spec("code.fix", 10);
    not_object.payload_json = "[1]".into();
    let status = client
        .submit_task(pb::SubmitTaskRequest {
            team_id: team.clone(),
            task: Some(not_object),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        Error::from_status(&status).field.as_deref(),
        Some("task.payload_json")
    );
    let status = client
        .get_task(pb::GetTaskRequest {
            team_id: "nope".into(),
            task_id: t1.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        Error::from_status(&status).field.as_deref(),
        Some("team_id")
    );

    // A draining orchestrator is leased nothing; an unknown one must register.
    client
        .heartbeat_orchestrator(pb::HeartbeatOrchestratorRequest {
            draining: true,
            ..beat(orc.clone())
        })
        .await
        .unwrap();
    assert!(lease(&mut client, &orc, 1).await.is_empty());
    client
        .heartbeat_orchestrator(beat(orc.clone()))
        .await
        .unwrap();
    let status = client
        .lease_tasks(pb::LeaseTasksRequest {
            orchestrator_id: OrchestratorId::new().to_string(),
            max_tasks: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    // Lease → heartbeat → complete.
    let leased = lease(&mut client, &orc, 1).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, t1.id);
    assert_eq!(state(&leased[0]), pb::TaskState::Leased);
    assert_eq!(leased[0].lease_owner, orc);
    let epoch = leased[0].epoch;
    assert_eq!(epoch, 1);
    let status = client
        .heartbeat_lease(pb::HeartbeatLeaseRequest {
            orchestrator_id: OrchestratorId::new().to_string(),
            task_id: t1.id.clone(),
            epoch,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let hb = client
        .heartbeat_lease(pb::HeartbeatLeaseRequest {
            orchestrator_id: orc.clone(),
            task_id: t1.id.clone(),
            epoch,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.lease_expires_at.is_some());
    let stale = client
        .complete_task(pb::CompleteTaskRequest {
            orchestrator_id: orc.clone(),
            task_id: t1.id.clone(),
            epoch: epoch + 1,
            result_json: String::new(),
        })
        .await
        .unwrap_err();
    assert_ne!(stale.code(), tonic::Code::Ok);
    let done = client
        .complete_task(pb::CompleteTaskRequest {
            orchestrator_id: orc.clone(),
            task_id: t1.id.clone(),
            epoch,
            result_json: r#"{"ok":true}"#.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(state(&done), pb::TaskState::Succeeded);
    let got = client
        .get_task(pb::GetTaskRequest {
            team_id: team.clone(),
            task_id: t1.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&got.result_json).unwrap(),
        serde_json::json!({"ok": true})
    );

    // A plan: b waits for a.
    let plan = client
        .submit_plan(pb::SubmitPlanRequest {
            team_id: team.clone(),
            name: "two steps".into(),
            idempotency_key: String::new(),
            tasks: vec![
                pb::PlanTaskSpec {
                    key: "a".into(),
                    task: Some(spec("build", 50)),
                    depends_on: vec![],
                },
                pb::PlanTaskSpec {
                    key: "b".into(),
                    task: Some(spec("test", 50)),
                    depends_on: vec!["a".into()],
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(plan.created);
    let plan_id = plan.plan.unwrap().id;
    let a = plan.tasks[0].task.clone().unwrap();
    let b = &plan.tasks[1];
    assert_eq!(state(&a), pb::TaskState::Queued);
    assert_eq!(state(b.task.as_ref().unwrap()), pb::TaskState::Blocked);
    assert_eq!(b.depends_on, vec![a.id.clone()]);
    let status = client
        .submit_plan(pb::SubmitPlanRequest {
            team_id: team.clone(),
            tasks: vec![pb::PlanTaskSpec {
                key: "x".into(),
                task: Some(spec("build", 500)),
                depends_on: vec![],
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        Error::from_status(&status).field.as_deref(),
        Some("tasks[0].task.priority")
    );

    // A failure to the dead-letter queue.
    let mut once = spec("flaky", 10);
    once.max_attempts = 1;
    let t2 = submit(&mut client, &team, once).await;
    let leased = lease(&mut client, &orc, 10).await;
    let mut ids: Vec<_> = leased.iter().map(|t| t.id.clone()).collect();
    ids.sort();
    let mut expected = vec![a.id.clone(), t2.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    let t2_epoch = leased.iter().find(|t| t.id == t2.id).unwrap().epoch;
    let failed = client
        .fail_task(pb::FailTaskRequest {
            orchestrator_id: orc.clone(),
            task_id: t2.id.clone(),
            epoch: t2_epoch,
            error: "agent crashed".into(),
            code: "internal".into(),
            retryable: true,
            retry_after: Some(godel_proto::convert::to_duration(Duration::from_secs(60))),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(state(&failed), pb::TaskState::DeadLettered);
    assert_eq!(failed.last_error, "agent crashed");
    let a_epoch = leased.iter().find(|t| t.id == a.id).unwrap().epoch;
    client
        .complete_task(pb::CompleteTaskRequest {
            orchestrator_id: orc.clone(),
            task_id: a.id.clone(),
            epoch: a_epoch,
            result_json: String::new(),
        })
        .await
        .unwrap();
    let detail = client
        .get_plan(pb::GetPlanRequest {
            team_id: team.clone(),
            plan_id: plan_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(detail.tasks[1].task.as_ref().unwrap()),
        pb::TaskState::Queued
    );

    let of_plan = client
        .list_tasks(pb::ListTasksRequest {
            team_id: team.clone(),
            plan_id: plan_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(of_plan.tasks.len(), 2);
    let of_type = client
        .list_tasks(pb::ListTasksRequest {
            team_id: team.clone(),
            task_type: "flaky".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        of_type.tasks.iter().map(|t| &t.id).collect::<Vec<_>>(),
        vec![&t2.id]
    );
    let listed = client
        .list_dead_letters(pb::ListDeadLettersRequest {
            team_id: team.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.dead_letters.len(), 1);
    let other_type = client
        .list_dead_letters(pb::ListDeadLettersRequest {
            team_id: team.clone(),
            task_type: "build".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other_type.dead_letters.is_empty());
    let dl = &listed.dead_letters[0];
    assert_eq!(dl.task.as_ref().unwrap().id, t2.id);
    assert_eq!(dl.errors.len(), 1);
    assert_eq!(dl.errors[0].message, "agent crashed");
    assert_eq!(dl.errors[0].attempt, 1);
    assert!(dl.errors[0].retryable);
    assert_eq!(dl.errors[0].code, "internal");
    assert_eq!(dl.errors[0].orchestrator_id, orc);
    assert_eq!(dl.reason, "attempts exhausted");
    assert!(dl.dead_lettered_at.is_some());
    let got = client
        .get_dead_letter(pb::GetDeadLetterRequest {
            team_id: team.clone(),
            task_id: t2.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letter
        .unwrap();
    assert_eq!(got.errors, dl.errors);
    let requeued = client
        .requeue_dead_letter(pb::RequeueDeadLetterRequest {
            team_id: team.clone(),
            task_id: t2.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(state(&requeued), pb::TaskState::Queued);
    let queued = client
        .list_tasks(pb::ListTasksRequest {
            team_id: team.clone(),
            state: pb::TaskState::Queued.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut queued_ids: Vec<_> = queued.tasks.iter().map(|t| t.id.clone()).collect();
    queued_ids.sort();
    let mut expected = vec![
        t2.id.clone(),
        detail.tasks[1].task.as_ref().unwrap().id.clone(),
    ];
    expected.sort();
    assert_eq!(queued_ids, expected);

    // Queue stats for the team: two queued; one live orchestrator.
    let stats = client
        .get_queue_stats(pb::GetQueueStatsRequest {
            team_id: team.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let count = |s: pb::TaskState| {
        stats
            .counts
            .iter()
            .find(|c| c.state() == s)
            .map_or(0, |c| c.count)
    };
    assert_eq!(count(pb::TaskState::Queued), 2);
    assert_eq!(count(pb::TaskState::DeadLettered), 0);
    assert_eq!(stats.orchestrators, 1);
    assert_eq!(stats.total_capacity, 10);
    assert_eq!(stats.free_capacity, 10);

    // Dead-letter it again (not retryable), then purge it.
    let leased = lease(&mut client, &orc, 10).await;
    let t2_epoch = leased.iter().find(|t| t.id == t2.id).unwrap().epoch;
    assert_eq!(t2_epoch, 2);
    client
        .fail_task(pb::FailTaskRequest {
            orchestrator_id: orc.clone(),
            task_id: t2.id.clone(),
            epoch: t2_epoch,
            error: "bad input".into(),
            code: String::new(),
            retryable: false,
            retry_after: None,
        })
        .await
        .unwrap();
    let dead = client
        .get_dead_letter(pb::GetDeadLetterRequest {
            team_id: team.clone(),
            task_id: t2.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letter
        .unwrap();
    assert_eq!(dead.reason, "not retryable");
    let at = dead.dead_lettered_at.unwrap();
    let purged = client
        .purge_dead_letters(pb::PurgeDeadLettersRequest {
            team_id: team.clone(),
            task_ids: vec![t2.id.clone()],
            dead_lettered_before: Some(at),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.purged, 0, "dead-lettered at, not before, that time");
    let purged = client
        .purge_dead_letters(pb::PurgeDeadLettersRequest {
            team_id: team.clone(),
            task_ids: vec![t2.id.clone()],
            dead_lettered_before: Some(godel_proto::convert::to_timestamp(
                godel_proto::convert::from_timestamp("at", &at).unwrap()
                    + chrono::Duration::seconds(1),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.purged, 1);
    let status = client
        .get_dead_letter(pb::GetDeadLetterRequest {
            team_id: team.clone(),
            task_id: t2.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Backpressure: a second team past its limit of 4 queued tasks.
    let other = TeamId::new().to_string();
    let batch = client
        .submit_tasks(pb::SubmitTasksRequest {
            team_id: other.clone(),
            tasks: (0..4).map(|_| spec("bulk", 10)).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results.len(), 4);
    assert!(batch.results.iter().all(|r| r.created));
    let status = client
        .submit_task(pb::SubmitTaskRequest {
            team_id: other.clone(),
            task: Some(spec("bulk", 10)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status
            .metadata()
            .get(godel_error::RETRY_AFTER_METADATA_KEY)
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let error = Error::from_status(&status);
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));

    shutdown.cancel();
    running.wait().await.unwrap();
    test_db.cleanup().await;
}

#[tokio::test]
async fn grpc_round_trip_sqlite() {
    round_trip(TestDb::sqlite()).await;
}

#[tokio::test]
async fn grpc_round_trip_postgres() {
    round_trip(TestDb::postgres().await).await;
}
