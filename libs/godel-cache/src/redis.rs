//! The Redis cache, on a deadpool-redis pool.
//!
//! Every key is stored as `<key_prefix>:<key>` (just `<key>` with an empty prefix), so
//! deployments and tests share one Redis without overlap. Compound operations run as
//! Lua scripts (`EVALSHA`, loaded on first use), which Redis executes atomically;
//! `gcra` reads the server's `TIME`, so every replica sees the same clock.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Script};
use deadpool_redis::{Pool, Runtime};

use crate::memory::round_up_to_millis;
use crate::{Cache, CacheConfig, CacheError, RateDecision, RateLimit, gcra};

/// Deletes the key only when it holds the expected value.
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// INCRBY that sets a TTL (ms, 0 = none) only when it creates the key.
const INCR_BY: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if existed == 0 and ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return value
";

/// GCRA on the server clock, in microseconds (see `gcra.rs` for the arithmetic).
/// ARGV: emission interval, burst. Returns {allowed, remaining, retry_after, reset_after}.
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  local t = tonumber(stored)
  if t and t > now then tat = t end
end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return {1, math.floor((now - allow_at) / emission), 0, new_tat - now}
";

/// A [`Cache`] on Redis. Cloning shares the pool.
#[derive(Clone)]
pub struct RedisCache {
    pool: Pool,
    url: String,
    /// `""` or `"<key_prefix>:"`.
    prefix: String,
    compare_and_delete: Script,
    incr_by: Script,
    gcra: Script,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Builds the pool (connections open lazily; call [`Cache::check`] to verify the
    /// server answers).
    pub fn new(config: &CacheConfig) -> Result<Self, CacheError> {
        let connect_err = |source: Box<dyn std::error::Error + Send + Sync>| CacheError::Connect {
            url: config.url.clone(),
            source,
        };
        let pool = deadpool_redis::Config::from_url(config.url.clone())
            .builder()
            .map_err(|e| connect_err(e.into()))?
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .wait_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| connect_err(e.into()))?;
        let prefix = if config.key_prefix.is_empty() {
            String::new()
        } else {
            format!("{}:", config.key_prefix)
        };
        Ok(Self {
            pool,
            url: config.url.clone(),
            prefix,
            compare_and_delete: Script::new(COMPARE_AND_DELETE),
            incr_by: Script::new(INCR_BY),
            gcra: Script::new(GCRA),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn conn(
        &self,
        op: &'static str,
        key: &str,
    ) -> Result<deadpool_redis::Connection, CacheError> {
        self.pool.get().await.map_err(|e| CacheError::Command {
            op,
            key: key.to_owned(),
            source: e.into(),
        })
    }
}

fn command_err(op: &'static str, key: &str) -> impl FnOnce(redis::RedisError) -> CacheError {
    let key = key.to_owned();
    move |e| CacheError::Command {
        op,
        key,
        source: e.into(),
    }
}

fn px(ttl: Duration) -> u64 {
    u64::try_from(round_up_to_millis(ttl).as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut conn = self.conn("GET", key).await?;
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(command_err("GET", key))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError> {
        let mut conn = self.conn("SET", key).await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(px(ttl));
        }
        cmd.query_async::<()>(&mut conn)
            .await
            .map_err(command_err("SET", key))
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let mut conn = self.conn("DEL", key).await?;
        let removed: i64 = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(command_err("DEL", key))?;
        Ok(removed > 0)
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, CacheError> {
        let mut conn = self.conn("SET NX", key).await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value).arg("NX");
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(px(ttl));
        }
        let stored: Option<String> = cmd
            .query_async(&mut conn)
            .await
            .map_err(command_err("SET NX", key))?;
        Ok(stored.is_some())
    }

    async fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, CacheError> {
        let mut conn = self.conn("compare-and-delete", key).await?;
        let removed: i64 = self
            .compare_and_delete
            .key(self.key(key))
            .arg(expected)
            .invoke_async(&mut conn)
            .await
            .map_err(command_err("compare-and-delete", key))?;
        Ok(removed > 0)
    }

    async fn incr_by(
        &self,
        key: &str,
        by: i64,
        ttl_on_create: Option<Duration>,
    ) -> Result<i64, CacheError> {
        let mut conn = self.conn("INCRBY", key).await?;
        let result = self
            .incr_by
            .key(self.key(key))
            .arg(by)
            .arg(ttl_on_create.map_or(0, px))
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(value) => Ok(value),
            Err(e) if e.to_string().contains("not an integer") => Err(CacheError::NotAnInteger {
                key: key.to_owned(),
            }),
            Err(e) => Err(command_err("INCRBY", key)(e)),
        }
    }

    async fn gcra(&self, key: &str, limit: RateLimit) -> Result<RateDecision, CacheError> {
        limit.validate()?;
        let mut conn = self.conn("GCRA", key).await?;
        let (allowed, remaining, retry_after, reset_after): (i64, i64, i64, i64) = self
            .gcra
            .key(self.key(key))
            .arg(gcra::micros(limit.emission_interval()).max(1))
            .arg(limit.burst)
            .invoke_async(&mut conn)
            .await
            .map_err(command_err("GCRA", key))?;
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: gcra::from_micros(retry_after),
            reset_after: gcra::from_micros(reset_after),
        })
    }

    async fn check(&self) -> Result<(), CacheError> {
        let connect_err = |source: Box<dyn std::error::Error + Send + Sync>| CacheError::Connect {
            url: self.url.clone(),
            source,
        };
        let mut conn = self.pool.get().await.map_err(|e| connect_err(e.into()))?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| connect_err(e.into()))
    }
}
