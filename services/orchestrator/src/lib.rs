//! The orchestrator service: agent sessions — runtimes, agent adapters, reconciliation and the LLM key proxy.
//!
//! Owns (DESIGN.md §2): sessions, runtime handles, session event logs, encrypted provider keys and LLM proxy tokens. A library with [`serve`] (production: its own
//! database and NATS) and [`start`] (dependencies passed in, as `godel up` does with
//! the in-process bus); `main.rs` only calls [`serve`].

mod config;
mod migrations;
pub mod runtime;

use godel_backend::{Backend, BackendError};
use godel_runtime::{RunningService, Service};
use tokio_util::sync::CancellationToken;

pub use config::OrchestratorConfig;
pub use godel_backend::Dependencies;

/// The service name: health-check name, metrics label, outbox relay name.
pub const SERVICE: &str = "orchestrator";

/// Why the orchestrator service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the orchestrator service cannot start")]
    Backend(#[from] BackendError),
    #[error("the orchestrator service failed")]
    Runtime(#[source] godel_runtime::RuntimeError),
}

/// Runs the service until `shutdown` is cancelled and it has drained.
pub async fn serve(config: OrchestratorConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let deps = Dependencies::connect(&config.bus).await?;
    start(config, deps, shutdown)
        .await?
        .wait()
        .await
        .map_err(Error::Runtime)
}

/// Opens and migrates the database, then starts the listeners and the outbox relay.
/// Returns once the service is listening; [`RunningService::wait`] waits for its end.
pub async fn start(
    config: OrchestratorConfig,
    deps: Dependencies,
    shutdown: CancellationToken,
) -> Result<RunningService, Error> {
    let backend = Backend::open::<migrations::Migrator>(SERVICE, &config.database, deps).await?;
    let service = Service::new(SERVICE, config.server).reflection(godel_proto::FILE_DESCRIPTOR_SET);
    backend
        .install(service)
        .start(shutdown)
        .await
        .map_err(Error::Runtime)
}
