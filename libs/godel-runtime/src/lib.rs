//! Service bootstrap shared by every Godel service: HTTP and gRPC listeners, health
//! and readiness, metrics, background tasks, and ordered graceful shutdown.
//!
//! ```ignore
//! let running = Service::new("scheduler", config.server)
//!     .http_routes(api_router)
//!     .grpc_service(SchedulerServer::new(handler))
//!     .reflection(godel_proto::FILE_DESCRIPTOR_SET)
//!     .readiness(Arc::new(DatabaseCheck(pool)))
//!     .background("lease-sweeper", move |stop| sweeper.run(stop))
//!     .start(shutdown)
//!     .await?;
//! running.wait().await?;
//! ```
//!
//! Every service serves, besides its own routes:
//! - HTTP: `/livez` (200 while the process runs), `/readyz` (200 only when every
//!   [`ReadinessCheck`] passes and shutdown has not begun, else 503 with a JSON body
//!   naming the failing checks), `/metrics` (Prometheus text).
//! - gRPC: `grpc.health.v1.Health` (SERVING for `""`, the service name and each service
//!   added with [`Service::grpc_service`], until shutdown) and server reflection.
//!
//! Requests to the service's own routes run in a server span continuing the caller's
//! `traceparent` ([`godel_telemetry::ServerTraceLayer`]).
//!
//! # Shutdown order
//!
//! When the token passed to [`Service::start`] is cancelled, within
//! [`ServerConfig::shutdown_grace`] (counted from the cancellation):
//!
//! 1. readiness goes 503 and gRPC health NOT_SERVING;
//! 2. after [`ServerConfig::drain_delay`] (time for load balancers to notice), the
//!    listeners stop accepting and in-flight requests drain;
//! 3. background tasks are cancelled one at a time, last registered first, each
//!    awaited before the next is cancelled.
//!
//! Whatever has not finished when the grace period ends is aborted, and
//! [`RunningService::wait`] returns [`RuntimeError::ShutdownTimeout`] naming it.
//!
//! A server or background task that fails before shutdown makes the service shut
//! down the same way and `wait` return that failure; the caller decides whether the
//! rest of the process stops too (in `godel up`, cancel the shared token).

pub mod entry;
pub mod signals;

mod probes;
mod shutdown;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::shutdown::{BackgroundTask, Supervisor};

/// A boxed error from a background task; any `std::error::Error` converts with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Listener addresses and shutdown timing; a section of every service's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP listener (`/livez`, `/readyz`, `/metrics` and the service's routes).
    pub http_addr: SocketAddr,
    /// gRPC listener. Port 0 picks a free port (see [`RunningService::grpc_addr`]).
    pub grpc_addr: SocketAddr,
    /// Total time shutdown may take, from the signal to the last background task;
    /// `"30s"`, `"1m"` or a number of seconds.
    #[serde(with = "godel_config::duration")]
    pub shutdown_grace: Duration,
    /// How long readiness reports 503 before the listeners close, so load balancers
    /// stop sending new requests first. Part of `shutdown_grace`.
    #[serde(with = "godel_config::duration")]
    pub drain_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080)),
            grpc_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9090)),
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
        }
    }
}

impl ServerConfig {
    /// Both listeners on 127.0.0.1 with free ports: tests and `godel up`.
    pub fn local() -> Self {
        Self {
            http_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            grpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..Self::default()
        }
    }
}

/// Something the service needs in order to take traffic: a database, the bus.
/// `/readyz` runs every check on each request (concurrently, 5 s timeout each), so a
/// check should really ping its dependency and stay cheap.
#[async_trait::async_trait]
pub trait ReadinessCheck: Send + Sync {
    /// Short name shown in the `/readyz` body: `database`, `nats`.
    fn name(&self) -> &str;
    /// `Ok` when ready; otherwise why not.
    async fn check(&self) -> Result<(), String>;
}

/// A [`ReadinessCheck`] from a name and an async function, for dependencies that
/// already have a ping: `readiness_check("database", move || { let db = db.clone();
/// async move { db.ping().await } })`.
pub fn readiness_check<F, Fut, E>(name: &'static str, check: F) -> Arc<dyn ReadinessCheck>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    struct FnCheck<F> {
        name: &'static str,
        check: F,
    }

    #[async_trait::async_trait]
    impl<F, Fut, E> ReadinessCheck for FnCheck<F>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        fn name(&self) -> &str {
            self.name
        }

        async fn check(&self) -> Result<(), String> {
            (self.check)().await.map_err(|err| err.to_string())
        }
    }

    Arc::new(FnCheck { name, check })
}

/// Why a service could not start, or how it ended.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A listener could not bind its address.
    #[error("cannot bind the {listener} listener to {addr}")]
    Bind {
        /// `HTTP` or `gRPC`.
        listener: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The reflection service rejected a descriptor set.
    #[error("invalid file descriptor set for gRPC reflection")]
    Reflection(#[source] tonic_reflection::server::Error),

    /// The signal handlers could not be installed.
    #[error("cannot install SIGINT/SIGTERM handlers")]
    Signals(#[source] std::io::Error),

    /// A server stopped with an error (before or during shutdown).
    #[error("the {listener} server of `{service}` failed")]
    Server {
        /// The service name.
        service: String,
        /// `HTTP` or `gRPC`.
        listener: &'static str,
        /// The server's error.
        #[source]
        source: BoxError,
    },

    /// A background task returned an error.
    #[error("background task `{task}` of `{service}` failed")]
    Background {
        /// The service name.
        service: String,
        /// The task name.
        task: String,
        /// The task's error.
        #[source]
        source: BoxError,
    },

    /// A server or background task panicked.
    #[error("{what} of `{service}` panicked")]
    Panicked {
        /// The service name.
        service: String,
        /// What panicked: `background task `x``, `HTTP server`.
        what: String,
    },

    /// Shutdown did not finish within the grace period; the listed parts were aborted.
    #[error("shutdown of `{service}` exceeded {grace:?}; aborted: {}", pending.join(", "))]
    ShutdownTimeout {
        /// The service name.
        service: String,
        /// The configured grace period.
        grace: Duration,
        /// What was still running: `HTTP server`, `background task `x``, …
        pending: Vec<String>,
    },

    /// The task supervising the service died.
    #[error("the supervisor of `{service}` died")]
    Supervisor {
        /// The service name.
        service: String,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

type BackgroundFn =
    Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, Result<(), BoxError>> + Send>;
type RoutesFn = Box<dyn FnOnce(Routes) -> Routes + Send>;

/// A service to start: its routes, readiness checks and background tasks.
pub struct Service {
    name: String,
    config: ServerConfig,
    http: axum::Router,
    grpc_base: Option<Routes>,
    grpc_services: Vec<RoutesFn>,
    health_names: Vec<String>,
    descriptor_sets: Vec<&'static [u8]>,
    checks: Vec<Arc<dyn ReadinessCheck>>,
    background: Vec<(String, BackgroundFn)>,
}

impl Service {
    /// A service named `name` (used in logs, errors and gRPC health).
    pub fn new(name: impl Into<String>, config: ServerConfig) -> Self {
        Self {
            name: name.into(),
            config,
            http: axum::Router::new(),
            grpc_base: None,
            grpc_services: Vec::new(),
            health_names: Vec::new(),
            descriptor_sets: Vec::new(),
            checks: Vec::new(),
            background: Vec::new(),
        }
    }

    /// Adds HTTP routes (merged with earlier ones). Paths `/livez`, `/readyz` and
    /// `/metrics` are taken.
    pub fn http_routes(mut self, router: axum::Router) -> Self {
        self.http = self.http.merge(router);
        self
    }

    /// Sets the base gRPC routes (a later call replaces an earlier one); services
    /// added with [`Service::grpc_service`] are added on top.
    pub fn grpc_routes(mut self, routes: Routes) -> Self {
        self.grpc_base = Some(routes);
        self
    }

    /// Adds one gRPC service; gRPC health reports it by its name too.
    pub fn grpc_service<S>(mut self, service: S) -> Self
    where
        S: tonic::codegen::Service<
                axum::http::Request<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.health_names.push(S::NAME.to_owned());
        self.grpc_services
            .push(Box::new(move |routes: Routes| routes.add_service(service)));
        self
    }

    /// Registers an encoded `FileDescriptorSet` (from the proto build) with gRPC
    /// reflection; call once per set.
    pub fn reflection(mut self, encoded_file_descriptor_set: &'static [u8]) -> Self {
        self.descriptor_sets.push(encoded_file_descriptor_set);
        self
    }

    /// Adds a readiness check.
    pub fn readiness(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Adds a background task, started by [`Service::start`]. It gets its own
    /// cancellation token, cancelled during shutdown after the servers have drained
    /// and after every task registered later has finished; it should then finish its
    /// current unit of work, hand back what it holds, and return.
    pub fn background<F, Fut>(mut self, name: impl Into<String>, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.background
            .push((name.into(), Box::new(move |token| task(token).boxed())));
        self
    }

    /// Binds the listeners, starts serving and starts the background tasks. Returns
    /// once everything is accepting; cancel `shutdown` to stop.
    pub async fn start(self, shutdown: CancellationToken) -> Result<RunningService, RuntimeError> {
        // Metrics recorded from here on reach /metrics even if `godel_telemetry::init`
        // was not called (tests).
        godel_telemetry::prometheus_handle();
        let http_listener = bind("HTTP", self.config.http_addr).await?;
        let grpc_listener = bind("gRPC", self.config.grpc_addr).await?;
        let http_addr = local_addr("HTTP", self.config.http_addr, &http_listener)?;
        let grpc_addr = local_addr("gRPC", self.config.grpc_addr, &grpc_listener)?;

        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in &self.descriptor_sets {
            reflection = reflection.register_encoded_file_descriptor_set(set);
        }
        let reflection = reflection.build_v1().map_err(RuntimeError::Reflection)?;

        let (reporter, health) = tonic_health::server::health_reporter();
        let mut health_names = vec![String::new(), self.name.clone()];
        health_names.extend(self.health_names);
        for name in &health_names {
            reporter
                .set_service_status(name.as_str(), ServingStatus::Serving)
                .await;
        }

        let mut routes = self.grpc_base.unwrap_or_default();
        for add in self.grpc_services {
            routes = add(routes);
        }
        let routes = routes.add_service(health).add_service(reflection);

        let readiness = Arc::new(probes::Readiness {
            checks: self.checks,
            shutting_down: AtomicBool::new(false),
        });
        let http = self
            .http
            .layer(godel_telemetry::ServerTraceLayer::new())
            .merge(probes::router(readiness.clone()));

        let background = self
            .background
            .into_iter()
            .map(|(name, task)| {
                let token = CancellationToken::new();
                let handle = tokio::spawn(task(token.clone()));
                BackgroundTask::new(name, token, handle)
            })
            .collect();

        let supervisor = Supervisor::start(shutdown::Parts {
            service: self.name.clone(),
            config: self.config,
            http_listener,
            http,
            grpc_listener,
            routes,
            readiness,
            reporter,
            health_names,
            background,
        });
        tracing::info!(service = %self.name, %http_addr, %grpc_addr, "service started");
        let name = self.name;
        let handle = tokio::spawn(supervisor.run(shutdown));
        Ok(RunningService {
            name,
            http_addr,
            grpc_addr,
            handle,
        })
    }

    /// [`Service::start`], then [`RunningService::wait`].
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        self.start(shutdown).await?.wait().await
    }
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind {
            listener,
            addr,
            source,
        })
}

fn local_addr(
    listener: &'static str,
    addr: SocketAddr,
    bound: &TcpListener,
) -> Result<SocketAddr, RuntimeError> {
    bound.local_addr().map_err(|source| RuntimeError::Bind {
        listener,
        addr,
        source,
    })
}

/// A started service.
#[derive(Debug)]
pub struct RunningService {
    name: String,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    handle: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

impl RunningService {
    /// The bound HTTP address (the real port when configured with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound gRPC address (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Waits until the service has shut down; see the crate docs for what an error
    /// means.
    pub async fn wait(self) -> Result<(), RuntimeError> {
        match self.handle.await {
            Ok(result) => result,
            Err(source) => Err(RuntimeError::Supervisor {
                service: self.name,
                source,
            }),
        }
    }
}
