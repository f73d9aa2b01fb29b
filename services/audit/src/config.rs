//! The audit service's configuration.

use godel_bus::{BusConfig, BusKind};
use godel_config::Secret;
use godel_runtime::ServerConfig;
use godel_store::DatabaseConfig;
use godel_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

/// Every setting of the audit service. Defaults are the production shape:
/// PostgreSQL (schema `audit`) and NATS on localhost; `godel up` overrides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub telemetry: TelemetryConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            database: DatabaseConfig {
                url: Secret::new("postgres://postgres@127.0.0.1:5432/godel".to_owned()),
                schema: Some("audit".to_owned()),
                ..DatabaseConfig::default()
            },
            bus: BusConfig {
                kind: BusKind::Nats,
                ..BusConfig::default()
            },
            telemetry: TelemetryConfig {
                service_name: "godel-audit".to_owned(),
                ..TelemetryConfig::default()
            },
        }
    }
}

impl godel_runtime::entry::ServiceConfig for AuditConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
