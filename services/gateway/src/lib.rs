//! The gateway: Godel's only public edge — REST + OpenAPI, server-sent event streams,
//! the web dashboard, SSO login redirects, authentication of every request, rate
//! limits, and forwarding to the internal services over gRPC with the caller's
//! identity and the trace context.
//!
//! It owns nothing durable (DESIGN.md §2). It is ready only when every internal
//! service it forwards to answers its gRPC health check with SERVING and its cache
//! (Redis in production) answers. A library with [`serve`] and [`start`];
//! `main.rs` only parses flags and calls [`serve`].

mod config;
mod upstream;

use std::sync::Arc;

use godel_cache::Cache;
use godel_runtime::{RunningService, Service, readiness_check};
use tokio_util::sync::CancellationToken;

pub use config::{GatewayConfig, UpstreamsConfig};

/// The service name: health-check name, metrics label, `service.name` of spans.
pub const SERVICE: &str = "gateway";

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect the gateway to its cache")]
    Cache(#[source] godel_cache::CacheError),
    #[error("invalid upstream address for {service}: `{url}`")]
    Upstream {
        service: &'static str,
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the gateway failed")]
    Runtime(#[source] godel_runtime::RuntimeError),
}

/// What the gateway is given rather than building itself: shared with the other
/// services in `godel up`, built from the configuration in production.
#[derive(Clone)]
pub struct Dependencies {
    pub cache: Arc<dyn Cache>,
}

impl Dependencies {
    /// Connects to what `config` names (Redis in production).
    pub async fn connect(config: &GatewayConfig) -> Result<Self, Error> {
        let cache = godel_cache::connect(&config.cache)
            .await
            .map_err(Error::Cache)?;
        Ok(Self { cache })
    }
}

/// Runs the gateway until `shutdown` is cancelled and it has drained.
pub async fn serve(config: GatewayConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let deps = Dependencies::connect(&config).await?;
    start(config, deps, shutdown)
        .await?
        .wait()
        .await
        .map_err(Error::Runtime)
}

/// Starts the gateway's listeners. Returns once it is listening.
pub async fn start(
    config: GatewayConfig,
    deps: Dependencies,
    shutdown: CancellationToken,
) -> Result<RunningService, Error> {
    let mut service = Service::new(SERVICE, config.server)
        .reflection(godel_proto::FILE_DESCRIPTOR_SET)
        .readiness(readiness_check("cache", move || {
            let cache = deps.cache.clone();
            async move { cache.check().await }
        }));
    for upstream in upstream::Upstream::all(&config.upstreams)? {
        service = service.readiness(Arc::new(upstream));
    }
    service.start(shutdown).await.map_err(Error::Runtime)
}
