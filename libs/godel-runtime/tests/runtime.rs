//! The service runtime through its real interface: HTTP probes, gRPC health and
//! reflection, and the shutdown sequence.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use godel_runtime::{
    BoxError, ReadinessCheck, RunningService, RuntimeError, ServerConfig, Service,
};
use godel_test_utils::eventually;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(10);

struct Toggle {
    healthy: AtomicBool,
}

#[async_trait::async_trait]
impl ReadinessCheck for Toggle {
    fn name(&self) -> &str {
        "database"
    }

    async fn check(&self) -> Result<(), String> {
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("connection refused".to_owned())
        }
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("HTTP request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

async fn health(addr: SocketAddr, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel(addr).await);
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status()
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connect")
}

fn config() -> ServerConfig {
    ServerConfig {
        shutdown_grace: Duration::from_secs(10),
        ..ServerConfig::local()
    }
}

async fn start(service: Service, shutdown: &CancellationToken) -> RunningService {
    service
        .start(shutdown.clone())
        .await
        .expect("service starts")
}

#[tokio::test]
async fn serves_livez_readyz_metrics_and_own_routes() {
    let shutdown = CancellationToken::new();
    let routes = axum::Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
    let running = start(
        Service::new("probe-test", config()).http_routes(routes),
        &shutdown,
    )
    .await;
    let addr = running.http_addr();
    assert_ne!(addr.port(), 0, "the real port is reported");

    assert_eq!(get(addr, "/livez").await.0, 200);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(addr, "/hello").await, (200, "hi".to_owned()));

    metrics::counter!("godel_runtime_test_requests_total", "route" => "hello").increment(2);
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("godel_runtime_test_requests_total{route=\"hello\"} 2"),
        "{body}"
    );

    assert_eq!(
        health(running.grpc_addr(), "").await,
        ServingStatus::Serving
    );
    assert_eq!(
        health(running.grpc_addr(), "probe-test").await,
        ServingStatus::Serving
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn readyz_reflects_a_failing_check() {
    let shutdown = CancellationToken::new();
    let check = Arc::new(Toggle {
        healthy: AtomicBool::new(false),
    });
    let running = start(
        Service::new("ready-test", config()).readiness(check.clone()),
        &shutdown,
    )
    .await;
    let addr = running.http_addr();

    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["failing"]["database"], "connection refused");
    assert_eq!(
        get(addr, "/livez").await.0,
        200,
        "liveness does not depend on readiness"
    );

    check.healthy.store(true, Ordering::SeqCst);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_flips_readiness_then_stops_servers_then_tasks_in_reverse() {
    let shutdown = CancellationToken::new();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let http_addr = Arc::new(Mutex::new(None::<SocketAddr>));

    let task = |name: &'static str| {
        let log = log.clone();
        let http_addr = http_addr.clone();
        move |stop: CancellationToken| async move {
            stop.cancelled().await;
            let addr = http_addr.lock().expect("lock").expect("address set");
            let refused = tokio::net::TcpStream::connect(addr).await.is_err();
            log.lock()
                .expect("lock")
                .push(format!("{name} cancelled, http refused={refused}"));
            Ok::<(), BoxError>(())
        }
    };
    let service = Service::new(
        "order-test",
        ServerConfig {
            drain_delay: Duration::from_secs(3),
            ..config()
        },
    )
    .background("first", task("first"))
    .background("second", task("second"));
    let running = start(service, &shutdown).await;
    *http_addr.lock().expect("lock") = Some(running.http_addr());
    let (http, grpc) = (running.http_addr(), running.grpc_addr());
    assert_eq!(get(http, "/readyz").await.0, 200);
    assert_eq!(health(grpc, "order-test").await, ServingStatus::Serving);

    shutdown.cancel();
    let body = eventually("/readyz answers 503", WAIT, || async {
        let (status, body) = get(http, "/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("shutting_down"), "{body}");
    assert!(
        log.lock().expect("lock").is_empty(),
        "no task cancelled while readiness is off"
    );
    assert_eq!(health(grpc, "order-test").await, ServingStatus::NotServing);
    assert_eq!(health(grpc, "").await, ServingStatus::NotServing);
    assert!(
        log.lock().expect("lock").is_empty(),
        "no task cancelled while servers drain"
    );

    running.wait().await.expect("clean shutdown");
    assert_eq!(
        *log.lock().expect("lock"),
        vec![
            "second cancelled, http refused=true".to_owned(),
            "first cancelled, http refused=true".to_owned(),
        ],
        "tasks stop last-registered first, after the listeners closed",
    );
}

#[tokio::test]
async fn a_task_ignoring_cancellation_makes_wait_fail_after_the_grace_period() {
    let shutdown = CancellationToken::new();
    let grace = Duration::from_millis(500);
    let polite_stopped = Arc::new(AtomicBool::new(false));
    let stopped = polite_stopped.clone();
    let service = Service::new(
        "stubborn-test",
        ServerConfig {
            shutdown_grace: grace,
            ..config()
        },
    )
    .background("stubborn", |_stop| async {
        futures::future::pending::<()>().await;
        Ok(())
    })
    .background("polite", move |stop| async move {
        stop.cancelled().await;
        stopped.store(true, Ordering::SeqCst);
        Ok(())
    });
    let running = start(service, &shutdown).await;

    let started = Instant::now();
    shutdown.cancel();
    let err = running.wait().await.expect_err("shutdown times out");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= grace,
        "returned after {elapsed:?}, before the grace period"
    );
    assert!(
        elapsed < grace + Duration::from_secs(5),
        "returned only after {elapsed:?}"
    );
    assert!(
        polite_stopped.load(Ordering::SeqCst),
        "the later-registered task stopped first"
    );
    match &err {
        RuntimeError::ShutdownTimeout {
            pending, grace: g, ..
        } => {
            assert_eq!(*g, grace);
            assert_eq!(pending, &vec!["background task `stubborn`".to_owned()]);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("stubborn"), "{err}");
}

#[tokio::test]
async fn a_failing_background_task_stops_the_service_with_its_error() {
    let shutdown = CancellationToken::new();
    let service = Service::new("failing-test", config()).background("relay", |_stop| async {
        Err::<(), BoxError>("nats unreachable".into())
    });
    let running = start(service, &shutdown).await;
    let err = running.wait().await.expect_err("task failure surfaces");
    match &err {
        RuntimeError::Background { task, source, .. } => {
            assert_eq!(task, "relay");
            assert_eq!(source.to_string(), "nats unreachable");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        !shutdown.is_cancelled(),
        "the caller's token is left to the caller"
    );
}

#[tokio::test]
async fn binding_a_taken_port_names_the_listener_and_address() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err = Service::new(
        "bind-test",
        ServerConfig {
            grpc_addr: addr,
            ..config()
        },
    )
    .start(CancellationToken::new())
    .await
    .expect_err("port is taken");
    assert!(
        matches!(
            err,
            RuntimeError::Bind {
                listener: "gRPC",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn reflection_lists_the_registered_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let shutdown = CancellationToken::new();
    let running = start(Service::new("reflect-test", config()), &shutdown).await;
    let mut client = ServerReflectionClient::new(channel(running.grpc_addr()).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let resp = stream
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected response {resp:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn first_sigterm_cancels_the_shutdown_token() {
    let token = godel_runtime::signals::shutdown_token().expect("signal handlers");
    assert!(!token.is_cancelled());
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM)
        .expect("send SIGTERM");
    eventually("SIGTERM cancels the token", WAIT, || {
        let cancelled = token.is_cancelled();
        async move { cancelled.then_some(()) }
    })
    .await;
}
