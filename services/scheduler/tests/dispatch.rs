//! Dispatch to orchestrators: leader election of the dispatch loop, batches leased
//! and announced on `godel.v1.dispatch.<orchestrator_id>`, and a standby taking over
//! from a leader that died — on SQLite (in-process bus) and PostgreSQL (NATS).

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use godel_bus::memory::MemoryBus;
use godel_bus::{Bus, BusConfig, ConsumerConfig, Subject};
use godel_error::ErrorCode;
use godel_proto::events::v1::DispatchEvent;
use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_scheduler::dispatch::{Dispatcher, LEADER_LEASE};
use godel_scheduler::leader::Election;
use godel_scheduler::queue::{NewTask, Queue, TaskState};
use godel_scheduler::registry::{Registration, Registry};
use godel_scheduler::{Dependencies, Migrator, QueueConfig, SchedulerConfig};
use godel_store::sea_orm::{ConnectionTrait, Statement};
use godel_store::{DatabaseConfig, Db, OutboxRelay, RelayConfig};
use godel_test_utils::eventually;
use godel_test_utils::nats::TestNats;
use godel_test_utils::postgres::{DbKind as Kind, TestDb};
use godel_types::{OrchestratorId, TaskId, TeamId};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn database(test_db: &TestDb) -> DatabaseConfig {
    DatabaseConfig {
        url: test_db.url.clone().into(),
        schema: test_db.schema.clone(),
        max_connections: 4,
        ..DatabaseConfig::default()
    }
}

async fn migrated(config: &DatabaseConfig) -> Db {
    let db = godel_store::connect(config).await.unwrap();
    godel_store::migrate::<Migrator>(&db).await.unwrap();
    db
}

/// A queue on `db` whose events stay in the outbox (no relay runs).
fn queue_over(db: &Db, config: QueueConfig) -> Queue {
    let relay = OutboxRelay::new(
        db.clone(),
        Arc::new(MemoryBus::default()),
        RelayConfig::new("scheduler"),
    );
    Queue::new(db.clone(), relay.notifier(), config)
}

fn fast() -> QueueConfig {
    QueueConfig {
        leader_ttl: Duration::from_millis(900),
        dispatch_interval: Duration::from_millis(20),
        ..QueueConfig::default()
    }
}

async fn register(registry: &Registry, capacity: u32) -> OrchestratorId {
    let id = OrchestratorId::new();
    registry
        .register(Registration {
            id,
            capacity,
            runtimes: vec!["process".into()],
            labels: Default::default(),
            endpoint: "http://127.0.0.1:1".into(),
            version: "test".into(),
        })
        .await
        .unwrap();
    id
}

/// Every `dispatch.tasks` event in the outbox, decoded, in order.
async fn dispatch_events(db: &Db) -> Vec<DispatchEvent> {
    let conn = db.conn();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT subject, payload FROM outbox ORDER BY seq",
        ))
        .await
        .unwrap();
    rows.iter()
        .filter(|r| {
            r.try_get::<String>("", "subject")
                .unwrap()
                .starts_with("godel.v1.dispatch.")
        })
        .map(|r| {
            let payload = r.try_get::<Vec<u8>>("", "payload").unwrap();
            let event = godel_proto::cloudevent::decode::<DispatchEvent>(&payload).unwrap();
            assert_eq!(event.type_, "dev.godel.dispatch.tasks.v1");
            event.data
        })
        .collect()
}

async fn leader_election(kind: Kind) {
    let test_db = TestDb::of(kind).await;
    let config = database(&test_db);
    let db_a = migrated(&config).await;
    let db_b = godel_store::connect(&config).await.unwrap();
    let ttl = Duration::from_millis(800);
    let a = Election::new(db_a.clone(), LEADER_LEASE, ttl);
    let b = Election::new(db_b.clone(), LEADER_LEASE, ttl);
    assert_ne!(a.holder(), b.holder());
    assert_eq!(a.current().await.unwrap(), None);

    let term_a = a.acquire().await.unwrap().expect("a free lease is taken");
    assert_eq!(term_a.epoch, 1);
    assert_eq!(b.acquire().await.unwrap(), None, "a live lease is held");
    // Renewing keeps the epoch; so does taking again what we hold.
    assert!(a.renew(&term_a).await.unwrap());
    assert_eq!(a.acquire().await.unwrap(), Some(term_a.clone()));
    term_a.check(db_a.conn(), now(&db_a).await).await.unwrap();

    // A leader that stops renewing loses the lease to a standby, by database time.
    let term_b = eventually("the standby takes the expired lease", WAIT, || async {
        b.acquire().await.unwrap()
    })
    .await;
    assert_eq!(term_b.epoch, 2, "a change of hands raises the epoch");
    assert!(
        !a.renew(&term_a).await.unwrap(),
        "the old term cannot renew"
    );
    let stale = term_a
        .check(db_a.conn(), now(&db_a).await)
        .await
        .unwrap_err();
    assert_eq!(stale.code, ErrorCode::FailedPrecondition, "{stale:?}");
    let holder = a.current().await.unwrap().unwrap();
    assert_eq!((holder.holder.as_str(), holder.epoch), (b.holder(), 2));
    assert!(holder.live);

    // Releasing someone else's lease does nothing; releasing ours frees it at once.
    a.release(&term_a).await.unwrap();
    assert_eq!(a.acquire().await.unwrap(), None);
    b.release(&term_b).await.unwrap();
    let term_a2 = a
        .acquire()
        .await
        .unwrap()
        .expect("a released lease is free");
    assert_eq!(term_a2.epoch, 3);

    db_a.close().await.unwrap();
    db_b.close().await.unwrap();
    test_db.cleanup().await;
}

async fn now(db: &Db) -> i64 {
    let conn = db.conn();
    let sql = match conn.get_database_backend() {
        godel_store::sea_orm::DbBackend::Postgres => {
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT) AS now"
        }
        _ => "SELECT CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) AS now",
    };
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "now").unwrap()
}

#[tokio::test]
async fn leader_election_sqlite() {
    leader_election(Kind::Sqlite).await;
}

#[tokio::test]
async fn leader_election_postgres() {
    leader_election(Kind::Postgres).await;
}

/// Two replicas' dispatch loops over one database: the leader dispatches; killed
/// without a word, it is replaced by the standby; no task is leased twice or lost, and
/// the dead leader's term can no longer dispatch.
async fn standby_takes_over(kind: Kind) {
    let test_db = TestDb::of(kind).await;
    let config = database(&test_db);
    let db_a = migrated(&config).await;
    let db_b = godel_store::connect(&config).await.unwrap();
    let queue_a = queue_over(&db_a, fast());
    let queue_b = queue_over(&db_b, fast());
    let registry = Registry::new(db_a.clone(), Duration::from_secs(60));
    let orc = register(&registry, 1_000).await;
    let team = TeamId::new();

    let a = Dispatcher::new(queue_a.clone(), registry.clone());
    let b = Dispatcher::new(
        queue_b.clone(),
        Registry::new(db_b.clone(), Duration::from_secs(60)),
    );
    let holder_a = a.election().holder().to_owned();
    let holder_b = b.election().holder().to_owned();
    let election = a.election().clone();
    let leader_a = tokio::spawn(a.run(CancellationToken::new()));
    eventually("replica A leads", WAIT, || async {
        let h = election.current().await.unwrap()?;
        (h.holder == holder_a && h.live).then_some(())
    })
    .await;
    let stop_b = CancellationToken::new();
    let standby_b = tokio::spawn(b.run(stop_b.clone()));

    let first: Vec<TaskId> = queue_a
        .submit_batch(team, (0..40).map(task).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    wait_leased(&queue_a, team, 40).await;

    // Kill A: its task ends without releasing the lease.
    leader_a.abort();
    assert!(leader_a.await.unwrap_err().is_cancelled());
    // Work submitted through B while nobody leads waits for the standby.
    let second: Vec<TaskId> = queue_b
        .submit_batch(team, (40..80).map(task).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    let holder = eventually("replica B takes over", WAIT, || async {
        let h = election.current().await.unwrap()?;
        (h.holder == holder_b && h.live).then_some(h)
    })
    .await;
    assert_eq!(holder.epoch, 2);
    wait_leased(&queue_b, team, 80).await;

    // Nothing lost or doubled: every task leased once, to the orchestrator, at epoch 1,
    // and announced exactly once.
    let events = dispatch_events(&db_a).await;
    let mut announced: HashMap<String, u64> = HashMap::new();
    for event in &events {
        assert_eq!(event.orchestrator_id, orc.to_string());
        for t in &event.tasks {
            assert_eq!(t.epoch, 1, "{t:?}");
            assert_eq!(t.team_id, team.to_string());
            *announced.entry(t.task_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(announced.len(), 80);
    assert!(announced.values().all(|n| *n == 1), "{announced:?}");
    for id in first.iter().chain(&second) {
        let t = queue_b.get(team, *id).await.unwrap();
        assert_eq!(t.state, TaskState::Leased);
        assert_eq!((t.epoch, t.attempts), (1, 1));
        assert_eq!(t.lease_owner, Some(orc));
        assert!(announced.contains_key(&id.to_string()));
    }

    // The dead leader's term is fenced off: it cannot dispatch any more.
    let stale = godel_scheduler::leader::Term {
        name: LEADER_LEASE,
        holder: holder_a,
        epoch: 1,
    };
    queue_a.submit(team, task(99)).await.unwrap();
    let err = queue_a
        .dispatch(orc, 10, Duration::from_secs(30), &stale)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err:?}");

    // A clean shutdown hands the lease back at once.
    stop_b.cancel();
    standby_b.await.unwrap();
    let after = election.current().await.unwrap().unwrap();
    assert!(!after.live, "released on shutdown: {after:?}");

    db_a.close().await.unwrap();
    db_b.close().await.unwrap();
    test_db.cleanup().await;
}

fn task(n: usize) -> NewTask {
    NewTask::new("code.review", json!({ "n": n }))
}

async fn wait_leased(queue: &Queue, team: TeamId, n: u64) {
    eventually("tasks leased", WAIT, || async {
        let stats = queue.stats().await.unwrap();
        (stats.count(team, TaskState::Leased) == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn standby_takes_over_sqlite() {
    standby_takes_over(Kind::Sqlite).await;
}

#[tokio::test]
async fn standby_takes_over_postgres() {
    standby_takes_over(Kind::Postgres).await;
}

/// The whole service: an orchestrator registers over gRPC, tasks submitted over gRPC
/// reach it on its dispatch subject, leased to it; completions free capacity for
/// more.
async fn dispatch_over_the_bus(kind: Kind) {
    let test_db = TestDb::of(kind).await;
    let nats = match kind {
        Kind::Postgres => Some(TestNats::new().await),
        Kind::Sqlite => None,
    };
    let bus_config = nats.as_ref().map_or_else(BusConfig::default, |n| {
        BusConfig::nats(&n.url, &n.stream_name, &n.subject_prefix)
    });
    let deps = Dependencies::connect(&bus_config).await.unwrap();
    let bus: Arc<dyn Bus> = deps.bus.clone();
    let config = SchedulerConfig {
        server: godel_runtime::ServerConfig::local(),
        database: database(&test_db),
        bus: bus_config,
        queue: fast(),
        ..SchedulerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let running = godel_scheduler::start(config, deps, shutdown.clone())
        .await
        .unwrap();
    let mut client = SchedulerServiceClient::connect(format!("http://{}", running.grpc_addr()))
        .await
        .unwrap();
    let orc = OrchestratorId::new();
    let mut consumer = bus
        .consumer(ConsumerConfig::new(
            godel_test_utils::unique_name("orc"),
            vec![Subject::dispatch(orc).to_string()],
        ))
        .await
        .unwrap();
    client
        .register_orchestrator(pb::RegisterOrchestratorRequest {
            orchestrator_id: orc.to_string(),
            capacity: 5,
            runtimes: vec!["process".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let team = TeamId::new().to_string();
    let submitted = client
        .submit_tasks(pb::SubmitTasksRequest {
            team_id: team.clone(),
            tasks: (0..8)
                .map(|n| pb::TaskSpec {
                    task_type: "code.review".into(),
                    payload_json: format!(r#"{{"n":{n}}}"#),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(submitted.len(), 8);

    // Capacity 5: five tasks arrive, leased to this orchestrator.
    let mut received: Vec<(String, u64)> = Vec::new();
    while received.len() < 5 {
        received.extend(next_dispatch(&mut *consumer, orc).await);
    }
    assert_eq!(received.len(), 5, "{received:?}");
    for (id, epoch) in &received {
        let task = client
            .get_task(pb::GetTaskRequest {
                team_id: team.clone(),
                task_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(task.state(), pb::TaskState::Leased);
        assert_eq!(task.epoch, *epoch);
        assert_eq!(task.lease_owner, orc.to_string());
    }

    // Completing frees capacity: the remaining three follow.
    for (id, epoch) in &received {
        client
            .complete_task(pb::CompleteTaskRequest {
                orchestrator_id: orc.to_string(),
                task_id: id.clone(),
                epoch: *epoch,
                result_json: "{}".into(),
            })
            .await
            .unwrap();
    }
    let mut rest: Vec<(String, u64)> = Vec::new();
    while rest.len() < 3 {
        rest.extend(next_dispatch(&mut *consumer, orc).await);
    }
    assert_eq!(rest.len(), 3);
    let mut all: Vec<&String> = received.iter().chain(&rest).map(|(id, _)| id).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 8, "each task dispatched once");

    shutdown.cancel();
    running.wait().await.unwrap();
    if let Some(nats) = nats {
        nats.cleanup().await;
    }
    test_db.cleanup().await;
}

/// The tasks of the next dispatch event for `orc`, acked.
async fn next_dispatch(
    consumer: &mut dyn godel_bus::Consumer,
    orc: OrchestratorId,
) -> Vec<(String, u64)> {
    let delivery = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a dispatch event in time")
        .unwrap()
        .expect("the bus is open");
    assert_eq!(delivery.subject, Subject::dispatch(orc));
    let event = godel_proto::cloudevent::decode::<DispatchEvent>(&delivery.payload).unwrap();
    delivery.ack().await.unwrap();
    assert_eq!(event.data.orchestrator_id, orc.to_string());
    event
        .data
        .tasks
        .into_iter()
        .map(|t| (t.task_id, t.epoch))
        .collect()
}

#[tokio::test]
async fn dispatch_over_the_bus_sqlite() {
    dispatch_over_the_bus(Kind::Sqlite).await;
}

#[tokio::test]
async fn dispatch_over_the_bus_postgres() {
    dispatch_over_the_bus(Kind::Postgres).await;
}
