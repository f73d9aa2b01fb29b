//! The gateway: Godel's only public edge — the REST API under `/v1` with its
//! OpenAPI 3.1 document, authentication of every request, per-principal rate limits,
//! an audit record of every call, and forwarding to the internal services over gRPC
//! with the caller's access token and the trace context; server-sent event streams of
//! sessions, tasks and plans (`sse`); an offline API docs page (`docs`).
//!
//! - `pipeline`: request id, trace context, problem+json, then authentication
//!   (`authn`), the rate limit (`rate_limit`) and the audit record (`audit_sink`);
//! - `routes`: the handlers, each checking the caller's permission in the team it
//!   names before calling a service; `openapi`: the document;
//! - `login`: sign-in through the identity providers under `/auth` — browser
//!   sessions (cookies, CSRF tokens) and `godel login`'s loopback flow.
//!
//! It owns nothing durable (DESIGN.md §2). It is ready only when every internal
//! service it forwards to answers its gRPC health check with SERVING and its cache
//! (Redis in production) answers. A library with [`serve`] and [`start`];
//! `main.rs` only parses flags and calls [`serve`].

mod api;
mod audit_sink;
mod authn;
mod call;
mod config;
mod docs;
mod login;
mod openapi;
mod pipeline;
mod rate_limit;
mod routes;
mod sse;
mod state;
mod upstream;

use std::sync::Arc;

use godel_cache::Cache;
use godel_proto::audit::v1::audit_service_client::AuditServiceClient;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use godel_proto::orchestrator::v1::provider_key_service_client::ProviderKeyServiceClient;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_runtime::{RunningService, Service, readiness_check};
use tokio_util::sync::CancellationToken;

pub use api::openapi;
pub use config::{
    ApiConfig, AuditConfig, GatewayConfig, LoginConfig, OnCacheError, RateLimitConfig,
    UpstreamsConfig,
};
pub use login::{CALLBACK_PATH, InvalidLogin};

/// Every route the REST API serves behind authentication: (method, path template,
/// audit action). `GET /v1/openapi.json` and the docs page (`/v1/docs`, `/v1/docs/…`)
/// are served without authentication besides.
pub const ROUTES: &[(&str, &str, &str)] = routes::ACTIONS;

/// The service name: health-check name, metrics label, `service.name` of spans.
pub const SERVICE: &str = "gateway";

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect the gateway to its cache")]
    Cache(#[source] godel_cache::CacheError),
    #[error("cannot connect the gateway to the bus")]
    Bus(#[source] godel_bus::BusError),
    #[error("invalid upstream address for {service}: `{url}`")]
    Upstream {
        service: &'static str,
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("no address configured for the {service} upstream")]
    UpstreamMissing { service: &'static str },
    #[error("invalid auth service URL for verifying tokens")]
    Identity(#[source] godel_identity::KeySourceError),
    #[error(transparent)]
    Login(#[from] login::InvalidLogin),
    #[error("the gateway failed")]
    Runtime(#[source] godel_runtime::RuntimeError),
}

/// What the gateway is given rather than building itself: shared with the other
/// services in `godel up`, built from the configuration in production.
#[derive(Clone)]
pub struct Dependencies {
    pub cache: Arc<dyn Cache>,
    /// Where the task and plan event streams read from.
    pub bus: Arc<dyn godel_bus::Bus>,
}

impl Dependencies {
    /// Connects to what `config` names (Redis and NATS in production).
    pub async fn connect(config: &GatewayConfig) -> Result<Self, Error> {
        let cache = godel_cache::connect(&config.cache)
            .await
            .map_err(Error::Cache)?;
        let bus = godel_bus::connect(&config.bus).await.map_err(Error::Bus)?;
        Ok(Self { cache, bus })
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
    let upstreams = upstream::Upstream::all(&config.upstreams, &shutdown)?;
    let [auth, scheduler, orchestrator, audit] =
        upstreams.each_ref().map(upstream::Upstream::channel);
    let clients = state::Clients {
        auth: AuthServiceClient::new(auth.clone()),
        scheduler: SchedulerServiceClient::new(scheduler),
        orchestrator: OrchestratorServiceClient::new(orchestrator.clone()),
        provider_keys: ProviderKeyServiceClient::new(orchestrator),
        audit: AuditServiceClient::new(audit),
    };
    // Keys come from the auth upstream (balanced when it has several instances)
    // unless `identity.auth_url` names another address.
    let verifier = if config.identity.auth_url == godel_identity::IdentityConfig::default().auth_url
    {
        godel_identity::CallerVerifier::new(
            config.identity.tokens.clone(),
            Arc::new(godel_identity::AuthKeySource::new(auth.clone())),
        )
    } else {
        config.identity.verifier().map_err(Error::Identity)?
    };
    let login = login::Login::new(
        &config.login,
        &deps.cache,
        clients.auth.clone(),
        config.api.upstream_timeout,
    )?;
    let authn = Arc::new(
        authn::Authenticator::new(
            verifier,
            clients.auth.clone(),
            config.api.api_key_cache_ttl,
            config.api.api_key_cache_entries,
        )
        .with_sessions(login.as_ref().map(|l| l.sessions())),
    );
    let (sink, audit_rx) = audit_sink::AuditSink::new(&config.audit);
    let state = state::AppState::new(state::Inner {
        authn: authn.clone(),
        limiter: rate_limit::RateLimiter::new(
            config.rate_limit.clone(),
            deps.cache.clone(),
            clients.auth.clone(),
        ),
        audit: sink,
        clients: clients.clone(),
        upstream_timeout: config.api.upstream_timeout,
        trust_forwarded_for: config.api.trust_forwarded_for,
        login,
        streams: sse::Streams {
            bus: deps.bus.clone(),
            keep_alive: config.api.sse_keep_alive,
            shutdown: shutdown.clone(),
        },
    });

    let cache = deps.cache.clone();
    let mut service = Service::new(SERVICE, config.server)
        .reflection(godel_proto::FILE_DESCRIPTOR_SET)
        .http_routes(api::router(state, config.api.max_body_bytes));
    // Failing open, a replica serves without the cache (rate limits in process), so
    // an outage of the cache must not take every replica out of the load balancer.
    if config.rate_limit.enabled && config.rate_limit.on_cache_error == OnCacheError::FailClosed {
        service = service.readiness(readiness_check("cache", move || {
            let cache = cache.clone();
            async move { cache.check().await }
        }));
    }
    for upstream in upstreams {
        service = service.readiness(Arc::new(upstream));
    }
    let bus = deps.bus.clone();
    service = service.readiness(readiness_check("bus", move || {
        let bus = bus.clone();
        async move { bus.check().await }
    }));
    match (
        audit_rx,
        config.audit.api_key.as_ref().map(|k| k.expose().clone()),
    ) {
        (Some(rx), Some(api_key)) => {
            let audit_config = config.audit.clone();
            service = service.background("audit-sink", move |token| {
                audit_sink::run(rx, clients.audit, authn, api_key, audit_config, token)
            });
        }
        _ => {
            tracing::warn!("audit.api_key is not set: API calls are not recorded in the audit log")
        }
    }
    service.start(shutdown).await.map_err(Error::Runtime)
}
