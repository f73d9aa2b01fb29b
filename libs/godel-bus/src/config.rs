//! Bus configuration and the one function services call to get a bus.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::memory::MemoryBus;
use crate::nats::NatsBus;
use crate::{Bus, BusError};

/// Which implementation backs the bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process bus (`godel up`, tests): one process, nothing survives a restart.
    #[default]
    Memory,
    /// NATS JetStream.
    Nats,
}

/// Bus settings. `Default` is the in-process bus, keeping at most 1,000,000 messages,
/// 256 MiB of payload and 24 hours (whichever limit is hit first drops the oldest).
///
/// Durations are written as `"500ms"`, `"30s"`, `"2m"`, `"24h"` or a number of seconds
/// (`godel_config::duration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    pub kind: BusKind,
    /// NATS server url(s), comma-separated (NATS only).
    pub url: String,
    /// The JetStream stream holding every subject of this deployment (NATS only).
    pub stream_name: String,
    /// Prepended to every logical subject on the wire (`<prefix>.godel.v1.…`), so several
    /// deployments or tests share one NATS server without overlap. Empty = no prefix.
    /// Must be one or more `.`-separated tokens without wildcards or spaces.
    pub subject_prefix: String,
    /// Publishing the same message id again within this window is a duplicate.
    #[serde(with = "godel_config::duration")]
    pub duplicate_window: Duration,
    /// Messages older than this are dropped from the stream.
    #[serde(with = "godel_config::duration")]
    pub max_age: Duration,
    /// The stream keeps at most this many messages; the oldest are dropped first.
    pub max_messages: u64,
    /// The stream keeps at most this many payload bytes; the oldest are dropped first.
    /// `None` = no byte limit (the message and age limits still apply).
    pub max_bytes: Option<u64>,
    /// How long connecting to NATS may take before `connect` fails.
    #[serde(with = "godel_config::duration")]
    pub connect_timeout: Duration,
    /// Stream replicas (NATS only; 1 on a single server).
    pub replicas: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            kind: BusKind::Memory,
            url: "nats://127.0.0.1:4222".to_owned(),
            stream_name: "GODEL".to_owned(),
            subject_prefix: String::new(),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(24 * 3600),
            max_messages: 1_000_000,
            max_bytes: Some(256 * 1024 * 1024),
            connect_timeout: Duration::from_secs(5),
            replicas: 1,
        }
    }
}

impl BusConfig {
    /// A NATS bus config with the defaults for everything else.
    pub fn nats(
        url: impl Into<String>,
        stream_name: impl Into<String>,
        subject_prefix: impl Into<String>,
    ) -> Self {
        Self {
            kind: BusKind::Nats,
            url: url.into(),
            stream_name: stream_name.into(),
            subject_prefix: subject_prefix.into(),
            ..Self::default()
        }
    }
}

/// Builds the bus `config` asks for: connects to NATS (creating or updating the
/// stream) or creates an in-process bus.
pub async fn connect(config: &BusConfig) -> Result<Arc<dyn Bus>, BusError> {
    match config.kind {
        BusKind::Memory => Ok(Arc::new(MemoryBus::new(config.into()))),
        BusKind::Nats => Ok(Arc::new(NatsBus::connect(config).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_deserializes_with_defaults() {
        let cfg: BusConfig = serde_json::from_str(
            r#"{"kind":"nats","subject_prefix":"prod","duplicate_window":"5m","max_age":3600}"#,
        )
        .unwrap();
        assert_eq!(cfg.kind, BusKind::Nats);
        assert_eq!(cfg.subject_prefix, "prod");
        assert_eq!(cfg.duplicate_window, Duration::from_secs(300));
        assert_eq!(cfg.max_age, Duration::from_secs(3600));
        assert_eq!(cfg.stream_name, "GODEL");
        assert_eq!(BusConfig::default().kind, BusKind::Memory);

        let json = serde_json::to_string(&cfg).unwrap();
        let back: BusConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        assert!(serde_json::from_str::<BusConfig>(r#"{"nope":1}"#).is_err());
    }
}
