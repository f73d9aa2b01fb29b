//! The audit service's configuration.

use std::path::PathBuf;
use std::time::Duration;

use godel_bus::{BusConfig, BusKind};
use godel_config::Secret;
use godel_identity::IdentityConfig;
use godel_runtime::ServerConfig;
use godel_store::DatabaseConfig;
use godel_telemetry::TelemetryConfig;
use godel_types::TeamId;
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
    pub checkpoint: CheckpointConfig,
    pub redaction: RedactionConfig,
    pub retention: RetentionConfig,
    /// How callers' access tokens are verified (the auth service's key set).
    pub identity: IdentityConfig,
}

/// Signed checkpoints of the chain head, written outside the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Where checkpoint files go, one per checkpoint (`checkpoint-<sequence>.json`).
    /// Keep it off the database's disk and out of reach of the database's users.
    pub dir: PathBuf,
    /// The Ed25519 signing key (hex seed), created with mode 0600 on first start; its
    /// public key is written next to it as `<file>.pub`.
    pub signing_key_file: PathBuf,
    /// A checkpoint after at least this many new records (0: only on the timer).
    pub every_records: u64,
    /// A checkpoint at least this often while records arrive (`"1m"`).
    #[serde(with = "godel_config::duration")]
    pub interval: Duration,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/godel/audit/checkpoints"),
            signing_key_file: PathBuf::from("/var/lib/godel/audit/checkpoint-signing.key"),
            every_records: 1000,
            interval: Duration::from_secs(60),
        }
    }
}

/// What is replaced before a record is stored, and the key of the pseudonyms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    /// The pseudonym key. When unset, `key_file` is read (and created with mode 0600
    /// on first start).
    pub key: Option<Secret<String>>,
    pub key_file: PathBuf,
    /// Also replace IP addresses (in text and the `client_ip` field).
    pub ip_addresses: bool,
    /// Extra patterns, each replaced by `[<name>:<pseudonym>]`.
    pub patterns: Vec<PatternConfig>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            key: None,
            key_file: PathBuf::from("/var/lib/godel/audit/pseudonym.key"),
            ip_addresses: false,
            patterns: Vec::new(),
        }
    }
}

/// A configured redaction pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Shown in the placeholder: 1-32 characters of a-z, 0-9 and `_`.
    pub name: String,
    /// A regular expression (Rust `regex` syntax).
    pub regex: String,
}

/// How long record payloads are kept. Expired payloads are removed; their chain
/// entries stay, so the chain still verifies (and reports them as erased).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// The period of every team without an override, and of records without a team
    /// (`"365d"`; 0: kept forever).
    #[serde(with = "godel_config::duration")]
    pub period: Duration,
    /// Per-team periods overriding `period`.
    pub teams: Vec<TeamRetention>,
    /// How often expired payloads are removed (0: never by the service).
    #[serde(with = "godel_config::duration")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            period: Duration::ZERO,
            teams: Vec::new(),
            interval: Duration::from_secs(3600),
        }
    }
}

/// One team's retention period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamRetention {
    pub team_id: TeamId,
    /// 0: kept forever.
    #[serde(with = "godel_config::duration")]
    pub period: Duration,
}

impl AuditConfig {
    /// Puts key files and checkpoints under `dir` (what `godel up` does with its data
    /// directory).
    pub fn with_data_dir(mut self, dir: &std::path::Path) -> Self {
        self.checkpoint.dir = dir.join("audit-checkpoints");
        self.checkpoint.signing_key_file = dir.join("audit-checkpoint-signing.key");
        self.redaction.key_file = dir.join("audit-pseudonym.key");
        self
    }
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
            checkpoint: CheckpointConfig::default(),
            redaction: RedactionConfig::default(),
            retention: RetentionConfig::default(),
            identity: IdentityConfig::default(),
        }
    }
}

impl godel_runtime::entry::ServiceConfig for AuditConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
