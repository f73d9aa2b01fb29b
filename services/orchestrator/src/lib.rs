//! The orchestrator service: agent sessions — runtimes, agent adapters, reconciliation and the LLM key proxy.
//!
//! Owns (DESIGN.md §2): sessions, runtime handles, session event logs, encrypted provider keys and LLM proxy tokens. Serves the gRPC `OrchestratorService`
//! ([`grpc`]) over [`session::Sessions`], which run agents on the worktree
//! [`runtime`], and `ProviderKeyService` over [`keys::ProviderKeys`]; with
//! `proxy.enabled`, runs the LLM [`proxy`] agents reach models through. A library
//! with [`serve`] (production: its own database and NATS) and [`start`] (dependencies passed in, as `godel up` does with
//! the in-process bus); `main.rs` only calls [`serve`].

pub mod adapters;
mod config;
pub mod grpc;
mod intake;
pub mod keys;
mod migrations;
pub mod plans;
pub mod proxy;
pub mod runtime;
pub mod session;

use godel_backend::{Backend, BackendError};
use godel_identity::CallerLayer;
use godel_proto::orchestrator::v1::orchestrator_service_server::OrchestratorServiceServer;
use godel_proto::orchestrator::v1::provider_key_service_server::ProviderKeyServiceServer;
use godel_runtime::{RunningService, Service};
use godel_types::OrchestratorId;
use tokio_util::sync::CancellationToken;
use tower::Layer;

pub use config::{
    AgentCli, CommandAdapter, IntakeConfig, KekBackend, KeysConfig, LocalKekConfig, ModelPrice,
    OrchestratorConfig, ProviderUpstream, ProxyConfig, SessionsConfig, VaultConfig,
};
pub use godel_backend::Dependencies;
pub use migrations::Migrator;

/// The service name: health-check name, metrics label, outbox relay name.
pub const SERVICE: &str = "orchestrator";

/// Why the orchestrator service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the orchestrator service cannot start")]
    Backend(#[from] BackendError),
    #[error("the orchestrator service failed")]
    Runtime(#[source] godel_runtime::RuntimeError),
    #[error("the orchestrator's work intake is misconfigured: {0}")]
    Intake(godel_error::Error),
    #[error("the orchestrator's provider keys or LLM proxy cannot start: {0}")]
    Proxy(godel_error::Error),
    #[error("the orchestrator cannot recover the sessions of its last run: {0}")]
    Recovery(godel_error::Error),
    #[error("the orchestrator cannot reach the auth service's key set")]
    Identity(#[from] godel_identity::KeySourceError),
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

/// Opens and migrates the database, recovers the sessions a previous run of this
/// orchestrator id left running (their agents killed, the sessions marked lost; see
/// [`session::Sessions::recover`]) and sweeps stray workspaces, then starts the listeners (serving the gRPC
/// `OrchestratorService`, see [`grpc`]) and the outbox relay. On shutdown, running
/// sessions are stopped (they end as cancelled) before the relay publishes its last
/// events. With `proxy.enabled`, the LLM proxy listens on `proxy.listen` and every
/// session gets a token for it; it stops after the sessions (their last calls are
/// metered) and before the relay. With `intake.enabled`, work intake takes leased
/// tasks from the scheduler and drains first on shutdown. Returns once the service
/// is listening; [`RunningService::wait`] waits for its end.
pub async fn start(
    config: OrchestratorConfig,
    deps: Dependencies,
    shutdown: CancellationToken,
) -> Result<RunningService, Error> {
    let verifier = config.identity.verifier()?;
    start_with_verifier(config, deps, verifier, shutdown).await
}

/// [`start`] with callers verified by `verifier` instead of one built from
/// `identity` (in-process key sets, tests).
pub async fn start_with_verifier(
    config: OrchestratorConfig,
    deps: Dependencies,
    verifier: godel_identity::CallerVerifier,
    shutdown: CancellationToken,
) -> Result<RunningService, Error> {
    let backend = Backend::open::<Migrator>(SERVICE, &config.database, deps).await?;
    let orchestrator_id = match config.intake.orchestrator_id {
        Some(id) => id,
        None => {
            let id = OrchestratorId::new();
            if config.intake.enabled {
                tracing::warn!(orchestrator_id = %id, "no intake.orchestrator_id configured; generated one for this run (set it to keep leases and the dispatch consumer across restarts)");
            }
            id
        }
    };
    let sweep_interval = config.sessions.sweep_interval;
    let sessions = session::Sessions::new(
        backend.db().clone(),
        backend.notifier(),
        config.sessions,
        orchestrator_id,
    );
    // Before any work is taken: agents a previous run left are stopped and their
    // sessions marked lost (intake's reconciliation reports them for a retry).
    sessions.recover().await.map_err(Error::Recovery)?;
    if let Err(error) = sessions.sweep_workspaces().await {
        tracing::warn!(error = %error, "the workspace sweep at start failed");
    }
    let kek = keys::ProviderKeys::kek_from_config(&config.keys).map_err(Error::Proxy)?;
    let provider_keys = keys::ProviderKeys::new(backend.db().clone(), kek);
    let proxy = if config.proxy.enabled {
        let proxy = proxy::LlmProxy::bind(
            config.proxy,
            backend.db().clone(),
            provider_keys.clone(),
            sessions.clone(),
            Some(verifier.clone()),
        )
        .await
        .map_err(Error::Proxy)?;
        sessions.set_llm_proxy(proxy.base_url().to_owned());
        Some(proxy)
    } else {
        None
    };
    // Plans are cancelled at the scheduler intake reports to.
    let scheduler = if config.intake.enabled {
        Some(
            intake::Scheduler::new(&config.intake.scheduler_endpoint, orchestrator_id)
                .map_err(Error::Intake)?,
        )
    } else {
        None
    };
    let plans = plans::PlanControl::new(sessions.clone(), scheduler);
    let intake = if config.intake.enabled {
        Some(
            intake::Intake::new(
                config.intake,
                orchestrator_id,
                sessions.clone(),
                backend.bus().clone(),
                plans.clone(),
            )
            .map_err(Error::Intake)?,
        )
    } else {
        None
    };
    let service = Service::new(SERVICE, config.server)
        .reflection(godel_proto::FILE_DESCRIPTOR_SET)
        .grpc_service(
            CallerLayer::new(verifier.clone()).layer(OrchestratorServiceServer::new(
                grpc::OrchestratorGrpc::new(sessions.clone(), shutdown.clone()).with_plans(plans),
            )),
        )
        .grpc_service(
            CallerLayer::new(verifier).layer(ProviderKeyServiceServer::new(
                grpc::ProviderKeyGrpc::new(provider_keys),
            )),
        );
    let mut service = backend.install(service);
    // After the relay, before the sessions: it serves until the agents stopped.
    if let Some(proxy) = proxy {
        service = service.background("llm-proxy", move |stop| async move {
            proxy.serve(stop).await?;
            Ok(())
        });
    }
    let sweeper = sessions.clone();
    service = service.background("workspace-sweep", move |stop| async move {
        sweeper.sweep_loop(sweep_interval, stop).await;
        Ok(())
    });
    // Registered after the outbox relay, so shutdown stops the sessions first and
    // the relay still publishes how they ended.
    let mut service = service.background("sessions", move |stop| async move {
        stop.cancelled().await;
        sessions.shutdown().await;
        Ok(())
    });
    // Registered last, so it drains first: it stops taking work and hands the
    // stopped sessions' tasks back while the sessions' store and relay still run.
    if let Some(intake) = intake {
        service = service.background("intake", move |stop| async move {
            intake.run(stop).await;
            Ok(())
        });
    }
    service.start(shutdown).await.map_err(Error::Runtime)
}
