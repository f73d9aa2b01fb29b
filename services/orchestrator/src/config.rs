//! The orchestrator service's configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use godel_bus::{BusConfig, BusKind};
use godel_config::Secret;
use godel_identity::IdentityConfig;
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
    pub proxy: ProxyConfig,
    /// How callers' access tokens are verified (the auth service's key set).
    pub identity: IdentityConfig,
    pub keys: KeysConfig,
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
            proxy: ProxyConfig::default(),
            identity: IdentityConfig::default(),
            keys: KeysConfig::default(),
        }
    }
}

impl OrchestratorConfig {
    /// Keeps worktrees, agent homes, repository clones and the local key-encryption
    /// key (created when missing) under `dir` (as `godel up` does with its data
    /// directory).
    pub fn with_data_dir(mut self, dir: &Path) -> Self {
        self.sessions.worktrees_dir = dir.join("orchestrator/worktrees");
        self.sessions.homes_dir = dir.join("orchestrator/homes");
        self.sessions.cache_dir = dir.join("orchestrator/repositories");
        self.keys.local.path = dir.join("orchestrator/kek");
        self.keys.local.create_if_missing = true;
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
    /// How often worktrees and agent homes nothing accounts for are removed (kept
    /// worktrees past `keep_failed_for`, those of sessions that ended or are
    /// unknown); also once at every start (`"10m"`).
    #[serde(with = "godel_config::duration")]
    pub sweep_interval: Duration,
    /// Accept a repository given as an absolute path on this machine (worktrees are
    /// added to it in place). Off in production: any caller could name any repository
    /// the orchestrator can read.
    pub allow_local_repositories: bool,
    /// The adapter of a session whose request names none.
    pub default_adapter: String,
    /// The `godel-sim-agent` binary; empty means next to the running executable,
    /// else on `PATH`.
    pub sim_agent_path: PathBuf,
    /// Arguments put before the simulated agent's flags: a program that runs the
    /// simulated agent as a subcommand (`godel sim-agent`, as `godel up` does when no
    /// `godel-sim-agent` binary is beside it).
    pub sim_agent_args: Vec<String>,
    /// Generic command adapters by name: any program whose output lines become
    /// events (JSON lines in the simulated agent's shape, else assistant messages).
    pub commands: BTreeMap<String, CommandAdapter>,
    /// The `pi` adapter: Pi (`@mariozechner/pi-coding-agent`) in RPC mode.
    pub pi: AgentCli,
    /// The `claude-code` adapter: Claude Code (`@anthropic-ai/claude-code`).
    pub claude_code: AgentCli,
    /// The `codex` adapter: Codex (`@openai/codex`); `model` must be a catalog id.
    pub codex: AgentCli,
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
            sweep_interval: Duration::from_secs(600),
            allow_local_repositories: false,
            default_adapter: "sim".to_owned(),
            sim_agent_path: PathBuf::new(),
            sim_agent_args: Vec::new(),
            commands: BTreeMap::new(),
            pi: AgentCli::new("pi", "gpt-5.5"),
            claude_code: AgentCli::new("claude", "claude-sonnet-4-5"),
            codex: AgentCli::new("codex", "gpt-5.5"),
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

/// A real agent CLI's settings (see `crate::adapters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentCli {
    /// An absolute path, or a name looked up on the orchestrator's `PATH` (which
    /// agents inherit).
    pub program: PathBuf,
    /// The model id the agent asks Godel's LLM proxy for.
    pub model: String,
    /// Arguments appended to the adapter's own.
    pub args: Vec<String>,
    /// Variables added to the agent's environment after the adapter's own (never a
    /// provider key: agents reach models only through the proxy).
    pub env: BTreeMap<String, String>,
}

impl AgentCli {
    /// `program` found on `PATH`, asking for `model`.
    pub fn new(program: &str, model: &str) -> Self {
        Self {
            program: PathBuf::from(program),
            model: model.to_owned(),
            args: Vec::new(),
            env: BTreeMap::new(),
        }
    }
}

impl Default for AgentCli {
    fn default() -> Self {
        Self::new("", "")
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

/// The LLM proxy agents talk to instead of a model provider (see `crate::proxy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Run the proxy and hand every session a token for it. Off: agents get no
    /// model access from Godel.
    pub enabled: bool,
    /// Where the proxy listens; port 0 picks a free one (agents run on this machine
    /// and are given the bound address).
    pub listen: std::net::SocketAddr,
    /// The base URL given to agents (`http://host:port`, no path) when they reach
    /// the proxy by another address than the bound one.
    pub public_url: Option<String>,
    /// Upstream model providers by name (`openai` serves Chat Completions and
    /// Responses, `anthropic` serves Messages).
    pub providers: BTreeMap<String, ProviderUpstream>,
    /// Prices by upstream model id; `*` applies to models not listed.
    pub prices: BTreeMap<String, ModelPrice>,
    /// Model ids as agents send them → the ids sent upstream.
    pub models: BTreeMap<String, String>,
    /// The name of the team's provider key used when the session's payload names
    /// none (`{"llm": {"keys": {"openai": "<name>"}}}`).
    pub default_key_name: String,
    /// Largest request body accepted from an agent.
    pub max_request_bytes: usize,
    /// How long to wait for an upstream's response headers.
    #[serde(with = "godel_config::duration")]
    pub upstream_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            providers: BTreeMap::from([
                (
                    "openai".to_owned(),
                    ProviderUpstream {
                        base_url: "https://api.openai.com".to_owned(),
                    },
                ),
                (
                    "anthropic".to_owned(),
                    ProviderUpstream {
                        base_url: "https://api.anthropic.com".to_owned(),
                    },
                ),
            ]),
            prices: BTreeMap::new(),
            models: BTreeMap::new(),
            default_key_name: "default".to_owned(),
            max_request_bytes: 32 << 20,
            upstream_timeout: Duration::from_secs(300),
        }
    }
}

/// Where a provider's API is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderUpstream {
    /// The API's origin without `/v1` (`https://api.openai.com`); the agent's path
    /// (`/v1/chat/completions`, …) is appended.
    pub base_url: String,
}

/// What a model costs, in millionths of a US dollar per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_micro_usd_per_mtok: u64,
    pub output_micro_usd_per_mtok: u64,
}

/// How provider keys are encrypted at rest (see `crate::keys`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// Which key-encryption backend wraps the per-key data keys.
    pub backend: KekBackend,
    pub local: LocalKekConfig,
    pub vault: VaultConfig,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            backend: KekBackend::Local,
            local: LocalKekConfig::default(),
            vault: VaultConfig::default(),
        }
    }
}

/// A key-encryption backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KekBackend {
    /// A 32-byte key in a file on this machine.
    Local,
    /// HashiCorp Vault's Transit secrets engine.
    Vault,
}

/// The local key-encryption key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalKekConfig {
    /// 32 raw bytes, readable only by the orchestrator.
    pub path: PathBuf,
    /// Create the file (mode 0600, random key) when it does not exist. Off in
    /// production: a new key cannot open what the old one wrapped.
    pub create_if_missing: bool,
}

impl Default for LocalKekConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/godel/orchestrator/kek"),
            create_if_missing: false,
        }
    }
}

/// Vault Transit: data keys are wrapped by `POST /v1/<mount>/encrypt/<key_name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// `https://vault.example:8200`.
    pub address: String,
    pub token: Secret<String>,
    /// Where the Transit engine is mounted.
    pub mount: String,
    /// The Transit key's name.
    pub key_name: String,
    /// Vault Enterprise namespace (`X-Vault-Namespace`), when used.
    pub namespace: Option<String>,
    #[serde(with = "godel_config::duration")]
    pub timeout: Duration,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:8200".to_owned(),
            token: Secret::default(),
            mount: "transit".to_owned(),
            key_name: "godel-provider-keys".to_owned(),
            namespace: None,
            timeout: Duration::from_secs(10),
        }
    }
}
