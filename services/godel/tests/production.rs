//! The five services in their production shape — PostgreSQL (a schema each), NATS
//! JetStream and Redis — each started through its own `serve`-path dependencies,
//! ready, and stopped cleanly; and readiness that really checks what it depends on.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use godel_bus::BusConfig;
use godel_cache::CacheConfig;
use godel_runtime::{RunningService, ServerConfig};
use godel_store::DatabaseConfig;
use godel_store::sea_orm::{ConnectionTrait, DbBackend, Statement};
use godel_test_utils::eventually;
use godel_test_utils::nats::TestNats;
use godel_test_utils::postgres::TestDb;
use godel_test_utils::redis::TestRedis;
use tokio_util::sync::CancellationToken;

fn database(db: &TestDb, service: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: db.url.clone().into(),
        schema: Some(format!("{}_{service}", db.schema.as_deref().unwrap())),
        max_connections: 4,
        ..DatabaseConfig::default()
    }
}

async fn readyz(service: &RunningService) -> (u16, String) {
    let response = reqwest::get(format!("http://{}/readyz", service.http_addr()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn wait_ready(name: &str, service: &RunningService) {
    eventually(
        &format!("{name} ready"),
        Duration::from_secs(20),
        || async { (readyz(service).await.0 == 200).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_runs_on_postgres_nats_and_redis() {
    let db = TestDb::postgres().await;
    let nats = TestNats::new().await;
    let redis = TestRedis::new().await;
    let bus = BusConfig::nats(&nats.url, &nats.stream_name, &nats.subject_prefix);
    let shutdown = CancellationToken::new();

    macro_rules! start {
        ($krate:ident, $config:ident, $name:literal) => {{
            let config = $krate::$config {
                server: ServerConfig::local(),
                database: database(&db, $name),
                bus: bus.clone(),
                ..Default::default()
            };
            let deps = $krate::Dependencies::connect(&config.bus).await.unwrap();
            $krate::start(config, deps, shutdown.clone()).await.unwrap()
        }};
    }
    let auth = start!(godel_auth, AuthConfig, "auth");
    let scheduler = start!(godel_scheduler, SchedulerConfig, "scheduler");
    let orchestrator = start!(godel_orchestrator, OrchestratorConfig, "orchestrator");
    let audit = start!(godel_audit, AuditConfig, "audit");

    let grpc = |s: &RunningService| format!("http://{}", s.grpc_addr());
    let config = godel_gateway::GatewayConfig {
        server: ServerConfig::local(),
        upstreams: godel_gateway::UpstreamsConfig {
            auth: grpc(&auth),
            scheduler: grpc(&scheduler),
            orchestrator: grpc(&orchestrator),
            audit: grpc(&audit),
            ..Default::default()
        },
        cache: CacheConfig::redis(&redis.url, &redis.key_prefix),
        bus: bus.clone(),
        ..Default::default()
    };
    let deps = godel_gateway::Dependencies::connect(&config).await.unwrap();
    let gateway = godel_gateway::start(config, deps, shutdown.clone())
        .await
        .unwrap();

    let services = [
        ("auth", auth),
        ("scheduler", scheduler),
        ("orchestrator", orchestrator),
        ("audit", audit),
        ("gateway", gateway),
    ];
    for (name, service) in &services {
        wait_ready(name, service).await;
    }
    // Each stateful service migrated its own schema.
    let conn = godel_store::connect(&DatabaseConfig {
        url: db.url.clone().into(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    for name in ["auth", "scheduler", "orchestrator", "audit"] {
        let schema = format!("{}_{name}", db.schema.as_deref().unwrap());
        let found = conn
            .conn()
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'outbox'",
                [schema.clone().into()],
            ))
            .await
        .unwrap();
        assert!(found.is_some(), "{schema}.outbox exists");
    }

    shutdown.cancel();
    for (name, service) in services {
        tokio::time::timeout(Duration::from_secs(15), service.wait())
            .await
            .unwrap_or_else(|_| panic!("{name} stops within its grace period"))
            .unwrap_or_else(|e| panic!("{name} stopped with {e}"));
    }
    for name in ["auth", "scheduler", "orchestrator", "audit"] {
        let schema = format!("{}_{name}", db.schema.as_deref().unwrap());
        conn.conn()
            .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
    }
    db.cleanup().await;
}

#[tokio::test]
async fn the_gateway_is_not_ready_while_an_upstream_is_down() {
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let shutdown = CancellationToken::new();
    let sqlite = TestDb::sqlite();
    let bus = godel_bus::connect(&BusConfig::default()).await.unwrap();
    let auth = godel_auth::start(
        godel_auth::AuthConfig {
            server: ServerConfig::local(),
            database: DatabaseConfig {
                url: sqlite.url.clone().into(),
                ..DatabaseConfig::default()
            },
            ..Default::default()
        },
        godel_auth::Dependencies { bus },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let up = format!("http://{}", auth.grpc_addr());
    let down = format!("http://{closed}");
    let config = godel_gateway::GatewayConfig {
        server: ServerConfig::local(),
        upstreams: godel_gateway::UpstreamsConfig {
            auth: up.clone(),
            scheduler: down,
            orchestrator: up.clone(),
            audit: up,
            ..Default::default()
        },
        cache: CacheConfig::default(),
        bus: BusConfig::default(),
        ..Default::default()
    };
    let deps = godel_gateway::Dependencies::connect(&config).await.unwrap();
    let gateway = godel_gateway::start(config, deps, shutdown.clone())
        .await
        .unwrap();

    let (status, body) = readyz(&gateway).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("scheduler"),
        "the failing upstream is named: {body}"
    );
    assert!(
        !body.contains("\"auth\""),
        "healthy upstreams are not reported: {body}"
    );

    shutdown.cancel();
    gateway.wait().await.unwrap();
    auth.wait().await.unwrap();
}
