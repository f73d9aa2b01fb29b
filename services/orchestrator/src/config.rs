//! The orchestrator service's configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use godel_bus::{BusConfig, BusKind};
use godel_config::Secret;
use godel_runtime::ServerConfig;
use godel_store::DatabaseConfig;
use godel_telemetry::TelemetryConfig;
use godel_types::OrchestratorId;
use serde::{Deserialize, Serialize};

/// Every setting of the orchestrator service. Defaults are the production shape:
/// PostgreSQL (schema `orchestrator`) and NATS on localhost; `godel up` overrides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestratorConfig {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub telemetry: TelemetryConfig,
    pub sessions: SessionsConfig,
    pub intake: IntakeConfig,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            database: DatabaseConfig {
                url: Secret::new("postgres://postgres@127.0.0.1:5432/godel".to_owned()),
                schema: Some("orchestrator".to_owned()),
                ..DatabaseConfig::default()
            },
            bus: BusConfig {
                kind: BusKind::Nats,
                ..BusConfig::default()
            },
            telemetry: TelemetryConfig {
                service_name: "godel-orchestrator".to_owned(),
                ..TelemetryConfig::default()
            },
            sessions: SessionsConfig::default(),
            intake: IntakeConfig::default(),
        }
    }
}

impl OrchestratorConfig {
    /// Keeps worktrees, agent homes and repository clones under `dir` (as `godel up`
    /// does with its data directory).
    pub fn with_data_dir(mut self, dir: &Path) -> Self {
        self.sessions.worktrees_dir = dir.join("orchestrator/worktrees");
        self.sessions.homes_dir = dir.join("orchestrator/homes");
        self.sessions.cache_dir = dir.join("orchestrator/repositories");
        self
    }
}

/// Where and how sessions run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Session worktrees (`<dir>/<session-id>`).
    pub worktrees_dir: PathBuf,
    /// Agents' private home directories (`<dir>/<session-id>`), outside any worktree.
    pub homes_dir: PathBuf,
    /// Bare clones of repositories given by URL.
    pub cache_dir: PathBuf,
    /// How long the worktree of a failed or cancelled session is kept (`"24h"`).
    #[serde(with = "godel_config::duration")]
    pub keep_failed_for: Duration,
    /// Accept a repository given as an absolute path on this machine (worktrees are
    /// added to it in place). Off in production: any caller could name any repository
    /// the orchestrator can read.
    pub allow_local_repositories: bool,
    /// The adapter of a session whose request names none.
    pub default_adapter: String,
    /// The `godel-sim-agent` binary; empty means next to the running executable,
    /// else on `PATH`.
    pub sim_agent_path: PathBuf,
    /// Generic command adapters by name: any program whose output lines become
    /// events (JSON lines in the simulated agent's shape, else assistant messages).
    pub commands: BTreeMap<String, CommandAdapter>,
    /// Confine agents with Landlock where the kernel supports it.
    pub landlock: bool,
    /// Wall-clock limit of a session whose request sets none (`"1h"`).
    #[serde(with = "godel_config::duration")]
    pub default_max_duration: Duration,
    /// How long an agent has to stop after its interrupt, then after SIGTERM,
    /// before its process group is killed.
    #[serde(with = "godel_config::duration")]
    pub interrupt_wait: Duration,
    #[serde(with = "godel_config::duration")]
    pub term_wait: Duration,
    /// Most events written to the session log in one transaction.
    pub max_event_batch: usize,
    /// Sessions per page of `ListSessions` by default and at most.
    pub default_page_size: usize,
    pub max_page_size: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            worktrees_dir: PathBuf::from("/var/lib/godel/orchestrator/worktrees"),
            homes_dir: PathBuf::from("/var/lib/godel/orchestrator/homes"),
            cache_dir: PathBuf::from("/var/lib/godel/orchestrator/repositories"),
            keep_failed_for: Duration::from_secs(24 * 3600),
            allow_local_repositories: false,
            default_adapter: "sim".to_owned(),
            sim_agent_path: PathBuf::new(),
            commands: BTreeMap::new(),
            landlock: true,
            default_max_duration: Duration::from_secs(3600),
            interrupt_wait: Duration::from_secs(10),
            term_wait: Duration::from_secs(5),
            max_event_batch: 500,
            default_page_size: 100,
            max_page_size: 1000,
        }
    }
}

/// Work intake: taking leased tasks from the scheduler (see `crate::intake`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeConfig {
    /// Take work from the scheduler. Off: sessions start only through the API.
    pub enabled: bool,
    /// The scheduler's gRPC endpoint (`http://host:port`).
    pub scheduler_endpoint: String,
    /// This orchestrator's stable id (`orc_…`): its registration, its dispatch
    /// subject and durable consumer, the owner of its leases. Keep it across
    /// restarts; `None` generates one at start (logged).
    pub orchestrator_id: Option<OrchestratorId>,
    /// Sessions this orchestrator runs at once, as registered with the scheduler.
    pub capacity: u32,
    /// Labels registered with the scheduler.
    pub labels: BTreeMap<String, String>,
    /// This orchestrator's own gRPC endpoint, as registered (informational).
    pub endpoint: String,
    /// How often the orchestrator heartbeats its registration.
    #[serde(with = "godel_config::duration")]
    pub heartbeat_interval: Duration,
    /// How often a running session's lease is heartbeated (well below the
    /// scheduler's lease duration).
    #[serde(with = "godel_config::duration")]
    pub lease_heartbeat_interval: Duration,
    /// How often sessions are compared with what the scheduler says this
    /// orchestrator holds.
    #[serde(with = "godel_config::duration")]
    pub reconcile_interval: Duration,
    /// How far back reconciliation looks at finished sessions whose report may not
    /// have been accepted (a few lease durations is plenty: an older lease expired).
    #[serde(with = "godel_config::duration")]
    pub reconcile_lookback: Duration,
    /// Longest pause between two attempts to report a session's end.
    #[serde(with = "godel_config::duration")]
    pub report_backoff_max: Duration,
    /// On shutdown, how long to keep trying to hand the stopped sessions' tasks
    /// back before leaving them to lease expiry.
    #[serde(with = "godel_config::duration")]
    pub drain_timeout: Duration,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            scheduler_endpoint: "http://127.0.0.1:9090".to_owned(),
            orchestrator_id: None,
            capacity: 8,
            labels: BTreeMap::new(),
            endpoint: String::new(),
            heartbeat_interval: Duration::from_secs(5),
            lease_heartbeat_interval: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(30),
            reconcile_lookback: Duration::from_secs(600),
            report_backoff_max: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl godel_runtime::entry::ServiceConfig for OrchestratorConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

/// A generic command adapter: the program runs in the session's worktree with the
/// prompt in `GODEL_PROMPT`, the task type in `GODEL_TASK_TYPE` and the payload
/// (JSON) in `GODEL_TASK_PAYLOAD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAdapter {
    /// An absolute path, or a name looked up on the agent's `PATH`.
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
}
