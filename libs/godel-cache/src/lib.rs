//! A small key-value cache behind one trait — for rate limits, leases/locks and small
//! caches shared by service replicas — with a Redis implementation and an in-process
//! one (`godel up`, tests) that keep the same semantics (checked by one conformance
//! suite).
//!
//! Every operation is atomic on its key; in Redis the compound ones (`compare_and_delete`,
//! `incr_by` with a TTL on create, `gcra`) run as Lua scripts, and `gcra` uses the
//! server's clock, so replicas sharing one Redis share one limit regardless of their
//! own clocks.
//!
//! ```no_run
//! # async fn run() -> Result<(), godel_cache::CacheError> {
//! use std::time::Duration;
//! let cache = godel_cache::connect(&godel_cache::CacheConfig::default()).await?; // in-process
//! let limit = godel_cache::RateLimit::per(100, Duration::from_secs(60)).with_burst(20);
//! let decision = cache.gcra("rl:team_x", limit).await?;
//! if !decision.allowed { /* 429 with Retry-After: decision.retry_after */ }
//! # Ok(()) }
//! ```

mod config;
mod gcra;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use config::{CacheConfig, CacheKind, connect};
pub use memory::MemoryCache;
pub use redis::RedisCache;

/// A key-value cache. Keys are plain strings; implementations may prefix them (per
/// deployment, per test). A TTL of `None` means the entry never expires; TTLs are
/// rounded up to whole milliseconds.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value of `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;

    /// Stores `value` under `key`, replacing any value and TTL.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError>;

    /// Removes `key`; true when it existed.
    async fn delete(&self, key: &str) -> Result<bool, CacheError>;

    /// Stores `value` only when `key` is absent; true when this call stored it. The
    /// building block of leases and locks (store an owner token with a TTL).
    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, CacheError>;

    /// Removes `key` only when its value is `expected`; true when removed. Releases a
    /// lock only if the caller still owns it.
    async fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, CacheError>;

    /// Adds `by` to the integer stored at `key` (a missing key counts as 0) and returns
    /// the new value. When this call creates the key, `ttl_on_create` becomes its TTL;
    /// later increments keep the TTL (fixed-window counters). Fails when the stored
    /// value is not a decimal integer.
    async fn incr_by(
        &self,
        key: &str,
        by: i64,
        ttl_on_create: Option<Duration>,
    ) -> Result<i64, CacheError>;

    /// Generic cell rate algorithm: one request against the limit kept at `key`.
    /// Atomic, so several replicas calling it share one limit.
    async fn gcra(&self, key: &str, limit: RateLimit) -> Result<RateDecision, CacheError>;

    /// Checks the cache is reachable (a real `PING` for Redis), for readiness probes.
    async fn check(&self) -> Result<(), CacheError>;
}

/// A rate limit: `rate` requests per `period` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: u32,
    pub period: Duration,
    /// Requests allowed back to back on an idle key (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// `rate` per `period`, with a burst of `rate`.
    pub fn per(rate: u32, period: Duration) -> Self {
        Self {
            rate,
            period,
            burst: rate,
        }
    }

    pub fn with_burst(self, burst: u32) -> Self {
        Self { burst, ..self }
    }

    /// Time between two requests at the sustained rate.
    pub fn emission_interval(&self) -> Duration {
        self.period / self.rate.max(1)
    }

    fn validate(&self) -> Result<(), CacheError> {
        if self.rate == 0 || self.burst == 0 || self.emission_interval().is_zero() {
            return Err(CacheError::InvalidRateLimit {
                reason: format!(
                    "rate ({}) and burst ({}) must be at least 1 and period ({:?}) / rate at least 1µs",
                    self.rate, self.burst, self.period
                ),
            });
        }
        Ok(())
    }
}

/// The answer to one rate-limited request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests that would still be allowed right now after this one.
    pub remaining: u32,
    /// When denied: how long until a request would be allowed. Zero when allowed.
    pub retry_after: Duration,
    /// How long until the key is back to a full burst (idle).
    pub reset_after: Duration,
}

/// Cache failures, with the operation and key that failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot connect to the cache at {url}")]
    Connect {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cache {op} of key `{key}` failed")]
    Command {
        op: &'static str,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the value of key `{key}` is not a decimal integer")]
    NotAnInteger { key: String },
    #[error("invalid rate limit: {reason}")]
    InvalidRateLimit { reason: String },
}
