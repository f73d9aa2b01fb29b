//! Store conformance: every case runs on SQLite and on PostgreSQL (a fresh schema on
//! the test server), through the public API, with the in-process bus.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use godel_bus::memory::{MemoryBus, MemoryBusConfig};
use godel_bus::{
    Bus, BusError, Consumer, ConsumerConfig, Headers, OutgoingMessage, PublishAck, Subject,
};
use godel_store::sea_orm::{ConnectionTrait, DbErr, TransactionError};
use godel_store::sea_orm_migration::{MigrationTrait, MigratorTrait};
use godel_store::{
    Backend, CreateOutbox, DatabaseConfig, Db, OutboxEvent, OutboxRelay, RelayConfig, StoreError,
    outbox,
};
use godel_test_utils::eventually;
use godel_test_utils::postgres::{DbKind as Kind, TestDb};
use godel_types::{EventId, TeamId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// A test-only business table, migrated next to the outbox.
mod widgets {
    use godel_store::sea_orm_migration::prelude::*;

    #[derive(DeriveIden)]
    pub enum Widget {
        Table,
        Id,
        Name,
    }

    pub struct CreateWidgets;

    impl MigrationName for CreateWidgets {
        fn name(&self) -> &str {
            "m20250101_000001_test_widgets"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CreateWidgets {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Widget::Table)
                        .col(ColumnDef::new(Widget::Id).text().not_null().primary_key())
                        .col(ColumnDef::new(Widget::Name).text().not_null())
                        .to_owned(),
                )
                .await
        }
    }

    pub fn insert(id: &str, name: &str) -> InsertStatement {
        Query::insert()
            .into_table(Widget::Table)
            .columns([Widget::Id, Widget::Name])
            .values_panic([id.into(), name.into()])
            .to_owned()
    }

    pub fn count() -> SelectStatement {
        Query::select()
            .expr_as(Expr::col(Widget::Id).count(), "n")
            .from(Widget::Table)
            .to_owned()
    }
}

struct TestMigrator;

impl MigratorTrait for TestMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOutbox), Box::new(widgets::CreateWidgets)]
    }
}

/// A migrated database for one test. `db` is declared first so the pool goes before
/// the schema/temp dir does.
struct Harness {
    db: Db,
    config: DatabaseConfig,
    test_db: TestDb,
}

impl Harness {
    async fn new(kind: Kind) -> Self {
        let h = Self::unmigrated(kind).await;
        godel_store::migrate::<TestMigrator>(&h.db).await.unwrap();
        h
    }

    async fn unmigrated(kind: Kind) -> Self {
        let test_db = TestDb::of(kind).await;
        let config = DatabaseConfig {
            url: test_db.url.clone().into(),
            schema: test_db.schema.clone(),
            ..DatabaseConfig::default()
        };
        let db = godel_store::connect(&config).await.unwrap();
        let expected = match kind {
            Kind::Sqlite => Backend::Sqlite,
            Kind::Postgres => Backend::Postgres,
        };
        assert_eq!(db.backend(), expected);
        Self {
            db,
            config,
            test_db,
        }
    }

    /// Closes the pool and drops the test schema now (a dropped `TestDb` does it on a
    /// background thread, which the test process may not wait for).
    async fn finish(self) {
        self.db.close().await.unwrap();
        self.test_db.cleanup().await;
    }

    /// A second, independent pool on the same database (another replica).
    async fn replica(&self) -> Db {
        godel_store::connect(&self.config).await.unwrap()
    }

    async fn pending(&self) -> u64 {
        outbox::pending(self.db.conn()).await.unwrap()
    }

    async fn widgets(&self) -> i64 {
        let row = self
            .db
            .conn()
            .query_one(&widgets::count())
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    }

    /// Writes a widget and `events` in one transaction.
    async fn commit(&self, events: Vec<OutboxEvent>) {
        self.db
            .transaction(|txn| {
                Box::pin(async move {
                    let id = EventId::new().to_string();
                    txn.execute(&widgets::insert(&id, "w")).await?;
                    outbox::enqueue(txn, &events)
                        .await
                        .map_err(|e| DbErr::Custom(e.to_string()))
                })
            })
            .await
            .unwrap();
    }
}

fn relay_config(batch_size: u32) -> RelayConfig {
    RelayConfig {
        batch_size,
        poll_interval: Duration::from_millis(20),
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        ..RelayConfig::new("conformance")
    }
}

/// Events on `subjects` subjects, round robin, each with a header and its index as payload.
fn events(n: usize, subjects: usize) -> Vec<OutboxEvent> {
    let teams: Vec<TeamId> = (0..subjects).map(|_| TeamId::new()).collect();
    (0..n)
        .map(|i| {
            let headers = Headers::from([("ce-type".to_owned(), format!("test.{i}"))]);
            OutboxEvent::new(
                Subject::task(teams[i % subjects], "queued"),
                headers,
                i.to_string(),
            )
        })
        .collect()
}

/// What a consumer received: (message id, subject, payload).
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// Consumes everything on `bus` (acking it) into a shared list.
async fn collect(bus: &MemoryBus) -> (Received, JoinHandle<()>) {
    let mut consumer = bus
        .consumer(ConsumerConfig::new("conformance", vec![]))
        .await
        .unwrap();
    let received: Received = Arc::default();
    let sink = received.clone();
    let task = tokio::spawn(async move {
        while let Ok(Some(d)) = consumer.next().await {
            let item = (
                d.id.clone(),
                d.subject.to_string(),
                String::from_utf8(d.payload.to_vec()).unwrap(),
            );
            sink.lock().unwrap().push(item);
            d.ack().await.unwrap();
        }
    });
    (received, task)
}

async fn wait_received(received: &Received, n: usize) -> Vec<(String, String, String)> {
    eventually(&format!("{n} messages at the consumer"), WAIT, || {
        let got = received.lock().unwrap().clone();
        async move { (got.len() >= n).then_some(got) }
    })
    .await
}

async fn wait_pending(h: &Harness, n: u64) {
    eventually(
        &format!("{n} rows left in the outbox"),
        WAIT,
        || async move { (h.pending().await == n).then_some(()) },
    )
    .await;
}

/// Asserts that `got` holds exactly `sent`, in order, each once.
fn assert_exactly_in_order(got: &[(String, String, String)], sent: &[OutboxEvent]) {
    let got_ids: Vec<&str> = got.iter().map(|(id, _, _)| id.as_str()).collect();
    let sent_ids: Vec<String> = sent.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(
        got_ids,
        sent_ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for ((_, subject, payload), e) in got.iter().zip(sent) {
        assert_eq!(subject, e.subject.as_str());
        assert_eq!(payload.as_bytes(), &e.payload[..]);
    }
}

fn spawn_relay(
    db: Db,
    bus: Arc<dyn Bus>,
    config: RelayConfig,
) -> (
    godel_store::RelayNotifier,
    CancellationToken,
    JoinHandle<()>,
) {
    let relay = OutboxRelay::new(db, bus, config);
    let notifier = relay.notifier();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    (notifier, shutdown, task)
}

// ---------------------------------------------------------------------------- cases

async fn connects_and_pings(kind: Kind) {
    let h = Harness::unmigrated(kind).await;
    h.db.ping().await.unwrap();
    if let Kind::Postgres = kind {
        // Every pooled connection points at the test schema.
        let row =
            h.db.conn()
                .query_one_raw(godel_store::sea_orm::Statement::from_string(
                    godel_store::sea_orm::DbBackend::Postgres,
                    "SELECT current_schema() AS s",
                ))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(
            row.try_get::<String>("", "s").unwrap(),
            h.config.schema.clone().unwrap()
        );
    }
    h.finish().await;
}

async fn migrations_apply_from_empty_and_reapply_as_noops(kind: Kind) {
    let h = Harness::unmigrated(kind).await;
    let replica = h.replica().await;
    // Two "replicas" migrating an empty database at the same moment.
    let (a, b) = tokio::join!(
        godel_store::migrate::<TestMigrator>(&h.db),
        godel_store::migrate::<TestMigrator>(&replica),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(h.pending().await, 0);
    assert_eq!(h.widgets().await, 0);
    h.commit(events(2, 1)).await;

    godel_store::migrate::<TestMigrator>(&h.db).await.unwrap();
    let applied =
        h.db.conn()
            .query_one_raw(godel_store::sea_orm::Statement::from_string(
                h.db.conn().get_database_backend(),
                "SELECT COUNT(*) AS n FROM seaql_migrations",
            ))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(applied.try_get::<i64>("", "n").unwrap(), 2);
    // Re-applying kept the data.
    assert_eq!(h.pending().await, 2);
    assert_eq!(h.widgets().await, 1);
    h.finish().await;
}

async fn business_row_and_outbox_commit_and_roll_back_together(kind: Kind) {
    let h = Harness::new(kind).await;
    // More rows than one INSERT statement carries.
    h.commit(events(1203, 3)).await;
    assert_eq!(h.widgets().await, 1);
    assert_eq!(h.pending().await, 1203);
    assert_eq!(
        outbox::pending_estimate(h.db.conn()).await.unwrap(),
        1203,
        "the estimate is exact while rows are published in order"
    );

    let evs = events(5, 1);
    let result =
        h.db.transaction(|txn| {
            Box::pin(async move {
                txn.execute(&widgets::insert("rolled-back", "w"))
                    .await
                    .map_err(|e| e.to_string())?;
                outbox::enqueue(txn, &evs)
                    .await
                    .map_err(|e| e.to_string())?;
                Err::<(), _>("the handler failed after writing".to_owned())
            })
        })
        .await;
    assert!(matches!(result, Err(TransactionError::Transaction(_))));
    assert_eq!(h.widgets().await, 1);
    assert_eq!(h.pending().await, 1203);

    // A duplicate event id fails the whole transaction, business row included.
    let dup = events(1, 1);
    let twice = vec![dup[0].clone(), dup[0].clone()];
    let result =
        h.db.transaction(|txn| {
            Box::pin(async move {
                txn.execute(&widgets::insert("dup", "w"))
                    .await
                    .map_err(|e| e.to_string())?;
                outbox::enqueue(txn, &twice)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .await;
    assert!(result.is_err());
    assert_eq!(h.widgets().await, 1);
    assert_eq!(h.pending().await, 1203);
    h.finish().await;
}

async fn relay_publishes_every_row_once_in_order_and_deletes_it(kind: Kind) {
    let h = Harness::new(kind).await;
    let bus = MemoryBus::new(MemoryBusConfig::default());
    let (received, _consumer) = collect(&bus).await;
    let first = events(120, 3);
    for chunk in first.chunks(10) {
        h.commit(chunk.to_vec()).await;
    }
    // Polling only every hour: after the first drain, only `notify` can wake it.
    let config = RelayConfig {
        poll_interval: Duration::from_secs(3600),
        ..relay_config(16)
    };
    let (notifier, shutdown, task) = spawn_relay(h.db.clone(), Arc::new(bus.clone()), config);

    let got = wait_received(&received, first.len()).await;
    assert_exactly_in_order(&got, &first);
    wait_pending(&h, 0).await;

    let second = events(7, 2);
    h.commit(second.clone()).await;
    notifier.notify();
    let got = wait_received(&received, first.len() + second.len()).await;
    assert_exactly_in_order(&got[first.len()..], &second);
    wait_pending(&h, 0).await;
    assert_eq!(bus.stored_messages(), first.len() + second.len());

    shutdown.cancel();
    task.await.unwrap();
    h.finish().await;
}

async fn relay_restarted_between_publish_and_delete_publishes_no_duplicate(kind: Kind) {
    let h = Harness::new(kind).await;
    let bus = MemoryBus::new(MemoryBusConfig::default());
    let (received, _consumer) = collect(&bus).await;
    let sent = events(10, 2);
    h.commit(sent.clone()).await;

    // The first relay "dies" right after its 4th publish was stored, before any delete.
    let dying = Arc::new(DieAfter {
        inner: bus.clone(),
        remaining: AtomicI64::new(4),
        died: AtomicBool::new(false),
    });
    let (_n, shutdown, task) = spawn_relay(h.db.clone(), dying.clone(), relay_config(100));
    eventually("the first relay to die mid-batch", WAIT, || {
        let died = dying.died.load(Ordering::SeqCst);
        async move { died.then_some(()) }
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(bus.stored_messages(), 4);
    assert_eq!(
        h.pending().await,
        10,
        "nothing was deleted before the crash"
    );

    // The restarted relay publishes everything again; the bus drops the 4 copies.
    let (_n, shutdown, task) = spawn_relay(h.db.clone(), Arc::new(bus.clone()), relay_config(100));
    let got = wait_received(&received, 10).await;
    wait_pending(&h, 0).await;
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(bus.stored_messages(), 10);
    assert_exactly_in_order(&got, &sent);
    // Nothing arrives after the 10.
    assert_eq!(received.lock().unwrap().len(), 10);
    h.finish().await;
}

async fn publish_failure_keeps_the_row_until_the_bus_recovers(kind: Kind) {
    let h = Harness::new(kind).await;
    let bus = MemoryBus::new(MemoryBusConfig::default());
    let (received, _consumer) = collect(&bus).await;
    let sent = events(6, 2);
    h.commit(sent.clone()).await;

    // Two publishes succeed, then the bus fails until told otherwise.
    let flaky = Arc::new(Flaky {
        inner: bus.clone(),
        allowed: AtomicI64::new(2),
        failures: AtomicUsize::new(0),
    });
    let (_n, shutdown, task) = spawn_relay(h.db.clone(), flaky.clone(), relay_config(100));
    eventually("the relay to retry a failing publish", WAIT, || {
        let failures = flaky.failures.load(Ordering::SeqCst);
        async move { (failures >= 3).then_some(()) }
    })
    .await;
    // The published prefix is gone; the failed row and the rest stay.
    assert_eq!(h.pending().await, 4);
    assert_exactly_in_order(&wait_received(&received, 2).await, &sent[..2]);

    flaky.allowed.store(i64::MAX, Ordering::SeqCst);
    let got = wait_received(&received, 6).await;
    wait_pending(&h, 0).await;
    assert_exactly_in_order(&got, &sent);
    shutdown.cancel();
    task.await.unwrap();
    h.finish().await;
}

/// PostgreSQL only: on SQLite one process runs one relay per database.
async fn two_relays_never_publish_concurrently_or_out_of_order(kind: Kind) {
    let h = Harness::new(kind).await;
    let bus = MemoryBus::new(MemoryBusConfig::default());
    let (received, _consumer) = collect(&bus).await;
    let probe = Arc::new(Probe {
        inner: bus.clone(),
        in_flight: AtomicUsize::new(0),
        overlaps: AtomicUsize::new(0),
    });
    let (a_bus, b_bus) = (
        Arc::new(Tagged {
            probe: probe.clone(),
            published: AtomicUsize::new(0),
        }),
        Arc::new(Tagged {
            probe: probe.clone(),
            published: AtomicUsize::new(0),
        }),
    );
    let replica = h.replica().await;
    let (na, sa, ta) = spawn_relay(h.db.clone(), a_bus.clone(), relay_config(5));
    let (nb, sb, tb) = spawn_relay(replica, b_bus.clone(), relay_config(5));

    let mut sent = Vec::new();
    for _ in 0..60 {
        let evs = events(5, 3);
        sent.extend(evs.iter().cloned());
        h.commit(evs).await;
        na.notify();
        nb.notify();
    }
    let got = wait_received(&received, sent.len()).await;
    wait_pending(&h, 0).await;
    sa.cancel();
    sb.cancel();
    ta.await.unwrap();
    tb.await.unwrap();

    assert_eq!(
        probe.overlaps.load(Ordering::SeqCst),
        0,
        "two relays published at once"
    );
    assert_exactly_in_order(&got, &sent);
    assert_eq!(bus.stored_messages(), sent.len());
    let (a, b) = (
        a_bus.published.load(Ordering::SeqCst),
        b_bus.published.load(Ordering::SeqCst),
    );
    assert!(
        a > 0 && b > 0,
        "both relays should have led some batches (a={a}, b={b})"
    );
    h.finish().await;
}

/// One `#[tokio::test]` per case in a module named after the backend.
macro_rules! conformance {
    ($module:ident => $kind:ident: $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::$kind).await;
                }
            )*
        }
    };
}

conformance!(sqlite => Sqlite:
    connects_and_pings,
    migrations_apply_from_empty_and_reapply_as_noops,
    business_row_and_outbox_commit_and_roll_back_together,
    relay_publishes_every_row_once_in_order_and_deletes_it,
    relay_restarted_between_publish_and_delete_publishes_no_duplicate,
    publish_failure_keeps_the_row_until_the_bus_recovers,
);

conformance!(postgres => Postgres:
    connects_and_pings,
    migrations_apply_from_empty_and_reapply_as_noops,
    business_row_and_outbox_commit_and_roll_back_together,
    relay_publishes_every_row_once_in_order_and_deletes_it,
    relay_restarted_between_publish_and_delete_publishes_no_duplicate,
    publish_failure_keeps_the_row_until_the_bus_recovers,
    two_relays_never_publish_concurrently_or_out_of_order,
);

#[tokio::test]
async fn sqlite_creates_the_parent_directory_and_uses_wal() {
    let dir = tempfile_dir();
    let path = dir.join("nested/deeper/svc.db");
    let config = DatabaseConfig {
        url: format!("sqlite://{}?mode=rwc", path.display()).into(),
        ..DatabaseConfig::default()
    };
    let db = godel_store::connect(&config).await.unwrap();
    db.ping().await.unwrap();
    assert!(path.exists());
    let row = db
        .conn()
        .query_one_raw(godel_store::sea_orm::Statement::from_string(
            godel_store::sea_orm::DbBackend::Sqlite,
            "PRAGMA journal_mode",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "wal");
    for (pragma, expected) in [
        ("synchronous", 2),
        ("foreign_keys", 1),
        ("busy_timeout", 5000),
    ] {
        let row = db
            .conn()
            .query_one_raw(godel_store::sea_orm::Statement::from_string(
                godel_store::sea_orm::DbBackend::Sqlite,
                format!("PRAGMA {pragma}"),
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.try_get_by_index::<i64>(0).unwrap(),
            expected,
            "PRAGMA {pragma}"
        );
    }
    db.close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn unreachable_postgres_fails_with_a_redacted_url() {
    let config = DatabaseConfig {
        url: "postgres://godel:hunter2@127.0.0.1:1/godel".into(),
        connect_timeout: Duration::from_secs(2),
        ..DatabaseConfig::default()
    };
    let err = godel_store::connect(&config).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("godel:***@127.0.0.1:1"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(godel_test_utils::unique_name("godel-store-test"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------- test buses

/// Stores up to `remaining` messages on the inner bus; the publish after that is stored
/// too but never answered — the process "died" between publish and delete.
struct DieAfter {
    inner: MemoryBus,
    remaining: AtomicI64,
    died: AtomicBool,
}

#[async_trait]
impl Bus for DieAfter {
    async fn publish(&self, msg: OutgoingMessage) -> Result<PublishAck, BusError> {
        let ack = self.inner.publish(msg).await?;
        if self.remaining.fetch_sub(1, Ordering::SeqCst) <= 1 {
            self.died.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Ok(ack)
    }
    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>, BusError> {
        self.inner.consumer(config).await
    }
    async fn subscribe(
        &self,
        filter: &str,
        from: Option<u64>,
    ) -> Result<godel_bus::Subscription, BusError> {
        self.inner.subscribe(filter, from).await
    }
    async fn check(&self) -> Result<(), BusError> {
        self.inner.check().await
    }
}

/// Fails every publish once `allowed` publishes went through.
struct Flaky {
    inner: MemoryBus,
    allowed: AtomicI64,
    failures: AtomicUsize,
}

#[async_trait]
impl Bus for Flaky {
    async fn publish(&self, msg: OutgoingMessage) -> Result<PublishAck, BusError> {
        if self.allowed.fetch_sub(1, Ordering::SeqCst) <= 0 {
            self.allowed.fetch_add(1, Ordering::SeqCst);
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(BusError::Publish {
                subject: msg.subject.to_string(),
                reason: "injected failure".to_owned(),
            });
        }
        self.inner.publish(msg).await
    }
    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>, BusError> {
        self.inner.consumer(config).await
    }
    async fn subscribe(
        &self,
        filter: &str,
        from: Option<u64>,
    ) -> Result<godel_bus::Subscription, BusError> {
        self.inner.subscribe(filter, from).await
    }
    async fn check(&self) -> Result<(), BusError> {
        self.inner.check().await
    }
}

/// Counts publishes that overlap in time across every relay using it.
struct Probe {
    inner: MemoryBus,
    in_flight: AtomicUsize,
    overlaps: AtomicUsize,
}

impl Probe {
    async fn publish(&self, msg: OutgoingMessage) -> Result<PublishAck, BusError> {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) != 0 {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        // Widen the window in which an overlapping publish would be seen.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let ack = self.inner.publish(msg).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        ack
    }
}

/// One relay's view of the shared [`Probe`], counting what that relay published.
struct Tagged {
    probe: Arc<Probe>,
    published: AtomicUsize,
}

#[async_trait]
impl Bus for Tagged {
    async fn publish(&self, msg: OutgoingMessage) -> Result<PublishAck, BusError> {
        let ack = self.probe.publish(msg).await?;
        self.published.fetch_add(1, Ordering::SeqCst);
        Ok(ack)
    }
    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>, BusError> {
        self.probe.inner.consumer(config).await
    }
    async fn subscribe(
        &self,
        filter: &str,
        from: Option<u64>,
    ) -> Result<godel_bus::Subscription, BusError> {
        self.probe.inner.subscribe(filter, from).await
    }
    async fn check(&self) -> Result<(), BusError> {
        self.probe.inner.check().await
    }
}
