//! The supervisor: runs the servers and background tasks, and shuts them down in order
//! within the grace period.

use std::sync::Arc;

use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::probes::Readiness;
use crate::{BoxError, RuntimeError, ServerConfig};

/// Everything [`Supervisor::start`] needs from `Service::start`.
pub(crate) struct Parts {
    pub(crate) service: String,
    pub(crate) config: ServerConfig,
    pub(crate) http_listener: TcpListener,
    pub(crate) http: axum::Router,
    pub(crate) grpc_listener: TcpListener,
    pub(crate) routes: Routes,
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) reporter: HealthReporter,
    pub(crate) health_names: Vec<String>,
    pub(crate) background: Vec<BackgroundTask>,
}

/// A spawned background task.
pub(crate) struct BackgroundTask {
    name: String,
    token: CancellationToken,
    handle: JoinHandle<Result<(), BoxError>>,
    done: bool,
}

impl BackgroundTask {
    pub(crate) fn new(
        name: String,
        token: CancellationToken,
        handle: JoinHandle<Result<(), BoxError>>,
    ) -> Self {
        Self {
            name,
            token,
            handle,
            done: false,
        }
    }
}

/// A spawned server (HTTP or gRPC) and the token that starts its graceful stop.
struct ServerTask {
    listener: &'static str,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), BoxError>>,
    done: bool,
}

pub(crate) struct Supervisor {
    service: String,
    config: ServerConfig,
    readiness: Arc<Readiness>,
    reporter: HealthReporter,
    health_names: Vec<String>,
    servers: Vec<ServerTask>,
    background: Vec<BackgroundTask>,
    /// Failures collected along the way; the first one is what `wait` returns.
    failures: Vec<RuntimeError>,
}

impl Supervisor {
    /// Spawns the HTTP and gRPC servers.
    pub(crate) fn start(parts: Parts) -> Self {
        let http_stop = CancellationToken::new();
        let http_signal = http_stop.clone().cancelled_owned();
        let http = tokio::spawn(
            // With the peer address, so routes can read `ConnectInfo<SocketAddr>`.
            axum::serve(
                parts.http_listener,
                parts
                    .http
                    .into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(http_signal)
            .into_future()
            .map(|r| r.map_err(BoxError::from)),
        );

        let grpc_stop = CancellationToken::new();
        let grpc_signal = grpc_stop.clone().cancelled_owned();
        let incoming = tonic::transport::server::TcpIncoming::from(parts.grpc_listener);
        let grpc = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(
                    godel_telemetry::ServerTraceLayer::new()
                        .skip_paths(["/grpc.health.v1.Health/", "/grpc.reflection."]),
                )
                .add_routes(parts.routes)
                .serve_with_incoming_shutdown(incoming, grpc_signal)
                .map(|r| r.map_err(BoxError::from)),
        );

        Self {
            service: parts.service,
            config: parts.config,
            readiness: parts.readiness,
            reporter: parts.reporter,
            health_names: parts.health_names,
            servers: vec![
                ServerTask {
                    listener: "HTTP",
                    stop: http_stop,
                    handle: http,
                    done: false,
                },
                ServerTask {
                    listener: "gRPC",
                    stop: grpc_stop,
                    handle: grpc,
                    done: false,
                },
            ],
            background: parts.background,
            failures: Vec::new(),
        }
    }

    /// Runs until `shutdown` is cancelled or a part fails, then shuts down in order.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        self.watch(&shutdown).await;
        let deadline = Instant::now() + self.config.shutdown_grace;
        let finished = tokio::time::timeout_at(deadline, self.drain())
            .await
            .is_ok();
        if !finished {
            let pending = self.abort_pending();
            tracing::error!(
                service = %self.service,
                grace = ?self.config.shutdown_grace,
                ?pending,
                "shutdown exceeded the grace period; aborted what was left",
            );
            self.failures.push(RuntimeError::ShutdownTimeout {
                service: self.service.clone(),
                grace: self.config.shutdown_grace,
                pending,
            });
        }
        let mut failures = self.failures.into_iter();
        let Some(first) = failures.next() else {
            tracing::info!(service = %self.service, "service stopped");
            return Ok(());
        };
        // The first failure goes back to the caller, who logs it; the rest are only
        // seen here.
        for other in failures {
            tracing::error!(service = %self.service, error = %godel_error::chain(&other), "also failed");
        }
        Err(first)
    }

    /// Phase 1: until `shutdown` is cancelled or a server or background task fails.
    /// A background task that returns `Ok` early just ends.
    async fn watch(&mut self, shutdown: &CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    tracing::info!(service = %self.service, "shutdown requested");
                    return;
                }
                (index, result) = next_server_exit(&mut self.servers) => {
                    self.servers[index].done = true;
                    let listener = self.servers[index].listener;
                    let failure = match result {
                        Ok(Ok(())) => RuntimeError::Server {
                            service: self.service.clone(),
                            listener,
                            source: "stopped before shutdown was requested".into(),
                        },
                        Ok(Err(source)) => {
                            RuntimeError::Server { service: self.service.clone(), listener, source }
                        }
                        Err(join) => self.join_failure(format!("{listener} server"), join),
                    };
                    self.failures.push(failure);
                    return;
                }
                (index, result) = next_background_exit(&mut self.background) => {
                    self.background[index].done = true;
                    let name = self.background[index].name.clone();
                    match result {
                        Ok(Ok(())) => {
                            tracing::info!(service = %self.service, task = %name, "background task finished");
                        }
                        other => {
                            self.record_background(name, other);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Phase 2: readiness off, drain delay, servers drain, background tasks stop in
    /// reverse order. Bounded by the caller's timeout; progress is recorded in the
    /// `done` flags so whatever is left can be aborted.
    async fn drain(&mut self) {
        self.readiness.begin_shutdown();
        for name in &self.health_names {
            self.reporter
                .set_service_status(name.as_str(), ServingStatus::NotServing)
                .await;
        }
        tracing::info!(service = %self.service, "readiness off; draining");
        if !self.config.drain_delay.is_zero() {
            tokio::time::sleep(self.config.drain_delay).await;
        }

        for server in &self.servers {
            server.stop.cancel();
        }
        for index in 0..self.servers.len() {
            if self.servers[index].done {
                continue;
            }
            let result = (&mut self.servers[index].handle).await;
            self.servers[index].done = true;
            let listener = self.servers[index].listener;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(source)) => self.failures.push(RuntimeError::Server {
                    service: self.service.clone(),
                    listener,
                    source,
                }),
                Err(join) => {
                    let failure = self.join_failure(format!("{listener} server"), join);
                    self.failures.push(failure);
                }
            }
        }
        tracing::info!(service = %self.service, "servers stopped; stopping background tasks");

        for index in (0..self.background.len()).rev() {
            if self.background[index].done {
                continue;
            }
            self.background[index].token.cancel();
            let result = (&mut self.background[index].handle).await;
            self.background[index].done = true;
            let name = self.background[index].name.clone();
            if result.as_ref().is_ok_and(Result::is_ok) {
                tracing::debug!(service = %self.service, task = %name, "background task stopped");
            } else {
                self.record_background(name, result);
            }
        }
    }

    /// Aborts everything still running; returns what that was.
    fn abort_pending(&mut self) -> Vec<String> {
        let mut pending = Vec::new();
        for server in self.servers.iter_mut().filter(|s| !s.done) {
            server.handle.abort();
            pending.push(format!("{} server", server.listener));
        }
        for task in self.background.iter_mut().rev().filter(|t| !t.done) {
            task.token.cancel();
            task.handle.abort();
            pending.push(format!("background task `{}`", task.name));
        }
        pending
    }

    fn record_background(&mut self, task: String, result: Result<Result<(), BoxError>, JoinError>) {
        let failure = match result {
            Ok(Ok(())) => return,
            Ok(Err(source)) => RuntimeError::Background {
                service: self.service.clone(),
                task,
                source,
            },
            Err(join) => self.join_failure(format!("background task `{task}`"), join),
        };
        self.failures.push(failure);
    }

    fn join_failure(&self, what: String, join: JoinError) -> RuntimeError {
        if join.is_panic() {
            RuntimeError::Panicked {
                service: self.service.clone(),
                what,
            }
        } else {
            RuntimeError::Supervisor {
                service: self.service.clone(),
                source: join,
            }
        }
    }
}

/// Waits for the first unfinished server to exit; never resolves when none is left.
async fn next_server_exit(
    servers: &mut [ServerTask],
) -> (usize, Result<Result<(), BoxError>, JoinError>) {
    let running: Vec<_> = servers
        .iter_mut()
        .enumerate()
        .filter(|(_, s)| !s.done)
        .map(|(i, s)| (&mut s.handle).map(move |r| (i, r)).boxed())
        .collect();
    if running.is_empty() {
        return futures::future::pending().await;
    }
    futures::future::select_all(running).await.0
}

/// Waits for the first unfinished background task to exit; never resolves when none
/// is left.
async fn next_background_exit(
    tasks: &mut [BackgroundTask],
) -> (usize, Result<Result<(), BoxError>, JoinError>) {
    let running: Vec<_> = tasks
        .iter_mut()
        .enumerate()
        .filter(|(_, t)| !t.done)
        .map(|(i, t)| (&mut t.handle).map(move |r| (i, r)).boxed())
        .collect();
    if running.is_empty() {
        return futures::future::pending().await;
    }
    futures::future::select_all(running).await.0
}
