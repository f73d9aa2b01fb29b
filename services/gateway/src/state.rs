//! What the routes share: the authenticator, rate limiter, audit sink and the gRPC
//! clients of the internal services.

use std::sync::Arc;
use std::time::Duration;

use godel_proto::audit::v1::audit_service_client::AuditServiceClient;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use godel_proto::orchestrator::v1::provider_key_service_client::ProviderKeyServiceClient;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use tonic::transport::Channel;

use crate::audit_sink::AuditSink;
use crate::authn::Authenticator;
use crate::rate_limit::RateLimiter;

/// The gRPC clients of the internal services (channels connect lazily).
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) auth: AuthServiceClient<Channel>,
    pub(crate) scheduler: SchedulerServiceClient<Channel>,
    pub(crate) orchestrator: OrchestratorServiceClient<Channel>,
    /// The orchestrator's provider-key API (the same channel).
    pub(crate) provider_keys: ProviderKeyServiceClient<Channel>,
    pub(crate) audit: AuditServiceClient<Channel>,
}

/// The state of the REST API; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) authn: Arc<Authenticator>,
    pub(crate) limiter: RateLimiter,
    pub(crate) audit: AuditSink,
    pub(crate) clients: Clients,
    pub(crate) upstream_timeout: Duration,
    pub(crate) trust_forwarded_for: bool,
    /// The `/auth` sign-in routes; `None` when `login.public_url` is unset.
    pub(crate) login: Option<Arc<crate::login::Login>>,
    /// What the server-sent event streams read from.
    pub(crate) streams: crate::sse::Streams,
}

impl AppState {
    pub(crate) fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
