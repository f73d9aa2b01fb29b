//! The gateway's configuration.

use godel_cache::{CacheConfig, CacheKind};
use godel_runtime::ServerConfig;
use godel_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

/// Every setting of the gateway. Defaults are the production shape: Redis on
/// localhost and the internal services at their Kubernetes service names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub server: ServerConfig,
    pub upstreams: UpstreamsConfig,
    pub cache: CacheConfig,
    pub telemetry: TelemetryConfig,
}

/// gRPC addresses (`http://host:port`) of the internal services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamsConfig {
    pub auth: String,
    pub scheduler: String,
    pub orchestrator: String,
    pub audit: String,
}

impl Default for UpstreamsConfig {
    fn default() -> Self {
        Self {
            auth: "http://godel-auth:9090".to_owned(),
            scheduler: "http://godel-scheduler:9090".to_owned(),
            orchestrator: "http://godel-orchestrator:9090".to_owned(),
            audit: "http://godel-audit:9090".to_owned(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            upstreams: UpstreamsConfig::default(),
            cache: CacheConfig {
                kind: CacheKind::Redis,
                ..CacheConfig::default()
            },
            telemetry: TelemetryConfig {
                service_name: "godel-gateway".to_owned(),
                ..TelemetryConfig::default()
            },
        }
    }
}

impl godel_runtime::entry::ServiceConfig for GatewayConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
