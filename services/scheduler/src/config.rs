//! The scheduler service's configuration.

use godel_bus::{BusConfig, BusKind};
use godel_config::Secret;
use godel_runtime::ServerConfig;
use godel_store::DatabaseConfig;
use godel_telemetry::TelemetryConfig;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every setting of the scheduler service. Defaults are the production shape:
/// PostgreSQL (schema `scheduler`) and NATS on localhost; `godel up` overrides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub telemetry: TelemetryConfig,
    pub queue: QueueConfig,
    pub planner: PlannerConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            database: DatabaseConfig {
                url: Secret::new("postgres://postgres@127.0.0.1:5432/godel".to_owned()),
                schema: Some("scheduler".to_owned()),
                ..DatabaseConfig::default()
            },
            bus: BusConfig {
                kind: BusKind::Nats,
                ..BusConfig::default()
            },
            telemetry: TelemetryConfig {
                service_name: "godel-scheduler".to_owned(),
                ..TelemetryConfig::default()
            },
            queue: QueueConfig::default(),
            planner: PlannerConfig::default(),
        }
    }
}

impl godel_runtime::entry::ServiceConfig for SchedulerConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

/// Limits and timings of the task queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Queued tasks a team may have when its settings name no limit.
    pub max_queued_per_team: u64,
    /// Leased or running tasks a team may have when its settings name no limit.
    pub max_concurrent_per_team: u64,
    /// Queued tasks across all teams; submissions past it are refused.
    pub max_queue_depth: u64,
    /// The retry-after hint sent with a refused submission.
    #[serde(with = "godel_config::duration")]
    pub backpressure_retry_after: Duration,
    /// Lease length when the caller names none.
    #[serde(with = "godel_config::duration")]
    pub default_lease_duration: Duration,
    /// Most tasks one claim may lease.
    pub max_lease_batch: usize,
    /// How often expired leases are swept back into the queue.
    #[serde(with = "godel_config::duration")]
    pub sweep_interval: Duration,
    /// Most expired leases one sweep handles (it sweeps again at once when full).
    pub sweep_batch: usize,
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(with = "godel_config::duration")]
    pub retry_backoff_base: Duration,
    /// Longest retry delay.
    #[serde(with = "godel_config::duration")]
    pub retry_backoff_max: Duration,
    /// Attempts of a task submitted without `max_attempts`.
    pub default_max_attempts: u32,
    /// Largest accepted payload (serialized JSON), in bytes.
    pub max_payload_bytes: usize,
    /// Page size of listings when the caller names none.
    pub default_page_size: usize,
    /// Largest page size of listings.
    pub max_page_size: usize,
    /// Most tasks one plan may have.
    pub max_plan_tasks: usize,
    /// An orchestrator whose last heartbeat is older than this is unhealthy: nothing
    /// is placed on it (the TTL of [`Registry`](crate::registry::Registry)).
    #[serde(with = "godel_config::duration")]
    pub orchestrator_ttl: Duration,
    /// How often the queue gauges (depth, age of the oldest queued task) are refreshed.
    #[serde(with = "godel_config::duration")]
    pub metrics_interval: Duration,
    /// How old the queue-depth snapshot behind backpressure may get before a
    /// submission counts again (a refusal always counts afresh).
    #[serde(with = "godel_config::duration")]
    pub depth_refresh: Duration,
    /// Most single-task writes (submissions, completions) that concurrent calls
    /// share in one transaction.
    pub write_batch: usize,
    /// Push dispatch: the elected replica leases ready tasks to registered
    /// orchestrators and announces them on their dispatch subjects. When off,
    /// orchestrators only pull work with `LeaseTasks`.
    pub dispatch: bool,
    /// How often the dispatch leader looks for work when nothing woke it (work
    /// submitted through another replica is found this way).
    #[serde(with = "godel_config::duration")]
    pub dispatch_interval: Duration,
    /// Most tasks leased to one orchestrator in one dispatch transaction.
    pub dispatch_batch: usize,
    /// How long the dispatch leadership lasts unless renewed (renewed every third of
    /// it); a standby takes over within about this long after the leader dies.
    #[serde(with = "godel_config::duration")]
    pub leader_ttl: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queued_per_team: 100_000,
            max_concurrent_per_team: 1_000,
            max_queue_depth: 1_000_000,
            backpressure_retry_after: Duration::from_secs(5),
            default_lease_duration: Duration::from_secs(30),
            max_lease_batch: 1_000,
            sweep_interval: Duration::from_secs(1),
            sweep_batch: 500,
            retry_backoff_base: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(300),
            default_max_attempts: 3,
            max_payload_bytes: 256 * 1024,
            default_page_size: 100,
            max_page_size: 1_000,
            max_plan_tasks: 1_000,
            orchestrator_ttl: Duration::from_secs(15),
            metrics_interval: Duration::from_secs(10),
            depth_refresh: Duration::from_millis(200),
            write_batch: 256,
            dispatch: true,
            dispatch_interval: Duration::from_millis(100),
            dispatch_batch: 500,
            leader_ttl: Duration::from_secs(10),
        }
    }
}

/// How intents are planned (`PlanIntent`): the optional LLM planner and the bounds
/// every plan is checked against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerConfig {
    /// Base URL (`http://host:port`, no path) of an OpenAI Chat Completions
    /// endpoint — Godel's LLM proxy or a provider. Unset: no LLM planner; every plan
    /// is made by the deterministic planner.
    pub llm_base_url: Option<String>,
    /// The model the LLM planner asks.
    pub llm_model: String,
    /// The bearer credential the endpoint accepts.
    pub llm_token: Option<Secret<String>>,
    /// How long one planning request to the model may take.
    #[serde(with = "godel_config::duration")]
    pub llm_timeout: Duration,
    /// Most tasks in one intent's plan.
    pub max_nodes: usize,
    /// Most estimated cost of one intent's plan, in micro-USD (0: unbounded).
    pub max_cost_micro_usd: u64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            llm_base_url: None,
            llm_model: String::new(),
            llm_token: None,
            llm_timeout: Duration::from_secs(60),
            max_nodes: 50,
            max_cost_micro_usd: 0,
        }
    }
}
