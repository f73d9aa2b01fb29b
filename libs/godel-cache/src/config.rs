//! Cache configuration and the one function services call to get a cache.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Cache, CacheError, MemoryCache, RedisCache};

/// Which implementation backs the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// In-process map (`godel up`, tests): not shared between processes.
    #[default]
    Memory,
    Redis,
}

/// Cache settings. `Default` is the in-process cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub kind: CacheKind,
    /// Redis url (`redis://host:port/db`, `rediss://` for TLS) (Redis only).
    pub url: String,
    /// Prepended to every key as `<key_prefix>:` (Redis only); empty = none.
    pub key_prefix: String,
    /// Maximum pooled connections (Redis only).
    pub pool_size: usize,
    /// Limit for opening a connection and for waiting on the pool (Redis only);
    /// `"5s"`, `"250ms"` or a number of seconds.
    #[serde(with = "godel_config::duration")]
    pub connect_timeout: Duration,
    /// Maximum keys held by the in-process cache (Memory only).
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            kind: CacheKind::Memory,
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: "godel".to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            max_entries: 100_000,
        }
    }
}

impl CacheConfig {
    /// A Redis cache config with the defaults for everything else.
    pub fn redis(url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        Self {
            kind: CacheKind::Redis,
            url: url.into(),
            key_prefix: key_prefix.into(),
            ..Self::default()
        }
    }
}

/// Builds the cache `config` asks for. For Redis it also checks the server answers,
/// so a wrong url fails at startup rather than on the first request.
pub async fn connect(config: &CacheConfig) -> Result<Arc<dyn Cache>, CacheError> {
    match config.kind {
        CacheKind::Memory => Ok(Arc::new(MemoryCache::new(config.max_entries))),
        CacheKind::Redis => {
            let cache = RedisCache::new(config)?;
            cache.check().await?;
            Ok(Arc::new(cache))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_with_defaults() {
        let cfg: CacheConfig = serde_json::from_str(
            r#"{"kind":"redis","key_prefix":"prod","connect_timeout":"250ms"}"#,
        )
        .unwrap();
        assert_eq!(cfg.kind, CacheKind::Redis);
        assert_eq!(cfg.key_prefix, "prod");
        assert_eq!(cfg.connect_timeout, Duration::from_millis(250));
        assert_eq!(cfg.pool_size, 16);
        assert_eq!(CacheConfig::default().kind, CacheKind::Memory);
        let back: CacheConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }
}
