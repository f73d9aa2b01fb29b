//! The scheduler service: the durable, fair task queue — priorities, weighted fair queuing across teams, idempotency, retries, dead letters, dependency DAGs and leases with fencing.
//!
//! Owns (DESIGN.md §2): plans, tasks, dependencies, queue state, leases, the dead-letter queue and the orchestrator registry. A library with [`serve`] (production: its own
//! database and NATS) and [`start`] (dependencies passed in, as `godel up` does with
//! the in-process bus); `main.rs` only calls [`serve`].

mod coalesce;
mod config;
pub mod dispatch;
pub mod grpc;
pub mod leader;
mod migrations;
pub mod profiles;
pub mod queue;
pub mod registry;

use godel_backend::{Backend, BackendError};
use godel_proto::scheduler::v1::scheduler_service_server::SchedulerServiceServer;
use godel_runtime::{RunningService, Service};
use tokio_util::sync::CancellationToken;

pub use config::{PlannerConfig, QueueConfig, SchedulerConfig};
pub use godel_backend::Dependencies;
pub use migrations::Migrator;

/// The service name: health-check name, metrics label, outbox relay name.
pub const SERVICE: &str = "scheduler";

/// Why the scheduler service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the scheduler service cannot start")]
    Backend(#[from] BackendError),
    #[error("the scheduler service failed")]
    Runtime(#[source] godel_runtime::RuntimeError),
}

/// Runs the service until `shutdown` is cancelled and it has drained.
pub async fn serve(config: SchedulerConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let deps = Dependencies::connect(&config.bus).await?;
    start(config, deps, shutdown)
        .await?
        .wait()
        .await
        .map_err(Error::Runtime)
}

/// Opens and migrates the database, then starts the listeners (serving the gRPC
/// `SchedulerService`, see [`grpc`]), the outbox relay, the sweeper of expired
/// leases, the refresher of the queue gauges and the dispatch loop ([`dispatch`],
/// active on the one replica elected to lead it).
/// Returns once the service is listening; [`RunningService::wait`] waits for its end.
pub async fn start(
    config: SchedulerConfig,
    deps: Dependencies,
    shutdown: CancellationToken,
) -> Result<RunningService, Error> {
    let backend = Backend::open::<Migrator>(SERVICE, &config.database, deps).await?;
    let registry = registry::Registry::new(backend.db().clone(), config.queue.orchestrator_ttl);
    let queue = queue::Queue::new(
        backend.db().clone(),
        backend.notifier(),
        config.queue.clone(),
    );
    let metrics_queue = queue.clone();
    let dispatcher = dispatch::Dispatcher::new(queue.clone(), registry.clone());
    let service = Service::new(SERVICE, config.server)
        .reflection(godel_proto::FILE_DESCRIPTOR_SET)
        .grpc_service(SchedulerServiceServer::new(
            grpc::SchedulerGrpc::new(queue.clone(), registry).with_planner(&config.planner),
        ));
    // Registered after the outbox relay, so shutdown stops it first and the relay
    // still publishes what its last sweep wrote.
    let mut service = backend.install(service);
    if config.queue.dispatch {
        service = service.background("dispatcher", move |stop| async move {
            dispatcher.run(stop).await;
            Ok(())
        });
    }
    service
        .background("lease-sweeper", move |stop| async move {
            queue.run_sweeper(stop).await;
            Ok(())
        })
        .background("queue-metrics", move |stop| async move {
            metrics_queue.run_metrics(stop).await;
            Ok(())
        })
        .start(shutdown)
        .await
        .map_err(Error::Runtime)
}
