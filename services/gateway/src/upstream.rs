//! The internal services the gateway forwards to, and their health as a readiness check.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{Error, UpstreamsConfig};

/// One internal service: a lazily connected gRPC channel.
pub(crate) struct Upstream {
    name: &'static str,
    channel: Channel,
}

impl Upstream {
    /// The channel, for the service's gRPC client.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The upstreams in the configuration: auth, scheduler, orchestrator, audit. Channels connect on first use and
    /// reconnect by themselves, so the gateway starts before its upstreams do.
    pub(crate) fn all(config: &UpstreamsConfig) -> Result<[Self; 4], Error> {
        let [auth, scheduler, orchestrator, audit] = [
            ("auth", &config.auth),
            ("scheduler", &config.scheduler),
            ("orchestrator", &config.orchestrator),
            ("audit", &config.audit),
        ]
        .map(|(name, url)| Self::lazy(name, url));
        Ok([auth?, scheduler?, orchestrator?, audit?])
    }

    fn lazy(name: &'static str, url: &str) -> Result<Self, Error> {
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|source| Error::Upstream {
            service: name,
            url: url.to_owned(),
            source,
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        Ok(Self { name, channel })
    }
}

#[async_trait::async_trait]
impl godel_runtime::ReadinessCheck for Upstream {
    fn name(&self) -> &str {
        self.name
    }

    async fn check(&self) -> Result<(), String> {
        let mut client = HealthClient::new(self.channel.clone());
        let response = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| format!("health check failed: {}", status.message()))?;
        match response.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("reports {}", other.as_str_name())),
        }
    }
}
