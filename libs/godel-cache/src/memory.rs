//! The in-process cache: a mutex-guarded map with TTLs.
//!
//! Expired entries are removed lazily (a read of an expired key finds nothing and drops
//! it) and by a purge task every [`PURGE_INTERVAL`] while the cache lives (started when
//! the cache is created inside a Tokio runtime). Memory is bounded by `max_entries`:
//! when a write would go past it, expired entries are purged first, and if that is
//! not enough, arbitrary entries are evicted (like Redis' `allkeys-random`) and a
//! warning is logged. Rate-limit state is stored as the key's value like any other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::gcra;
use crate::{Cache, CacheError, RateDecision, RateLimit};

/// How often the background task drops expired entries.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// An in-process [`Cache`]. Cloning shares the map.
#[derive(Clone)]
pub struct MemoryCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("max_entries", &self.inner.max_entries)
            .finish_non_exhaustive()
    }
}

struct Inner {
    map: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
    /// Origin of the microsecond clock used for rate-limit state.
    epoch: Instant,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl MemoryCache {
    /// A cache holding at most `max_entries` keys (at least 1).
    pub fn new(max_entries: usize) -> Self {
        let inner = Arc::new(Inner {
            map: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
            epoch: Instant::now(),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(purge_periodically(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Number of entries held, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired entry now.
    pub fn purge_expired(&self) {
        let now = Instant::now();
        self.inner.lock().retain(|_, e| e.live(now));
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new(crate::CacheConfig::default().max_entries)
    }
}

async fn purge_periodically(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = Instant::now();
        inner.lock().retain(|_, e| e.live(now));
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Every critical section leaves the map consistent, so a poisoned lock is safe.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The live entry of `key`, dropping it when expired.
fn live<'a>(map: &'a mut HashMap<String, Entry>, key: &str, now: Instant) -> Option<&'a mut Entry> {
    if map.get(key).is_some_and(|e| !e.live(now)) {
        map.remove(key);
    }
    map.get_mut(key)
}

/// Makes room for one new key.
fn make_room(map: &mut HashMap<String, Entry>, max_entries: usize, key: &str, now: Instant) {
    if map.len() < max_entries || map.contains_key(key) {
        return;
    }
    map.retain(|_, e| e.live(now));
    if map.len() < max_entries {
        return;
    }
    let evict = (max_entries / 100).max(1);
    let victims: Vec<String> = map.keys().take(evict).cloned().collect();
    for victim in &victims {
        map.remove(victim);
    }
    tracing::warn!(
        max_entries,
        evicted = victims.len(),
        "in-process cache is full; evicted arbitrary entries"
    );
}

fn deadline(now: Instant, ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|ttl| now + round_up_to_millis(ttl))
}

/// TTLs are whole milliseconds (at least 1), as in Redis `PX`.
pub(crate) fn round_up_to_millis(ttl: Duration) -> Duration {
    let ms = ttl.as_nanos().div_ceil(1_000_000).max(1);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut map = self.inner.lock();
        Ok(live(&mut map, key, Instant::now()).map(|e| e.value.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut map = self.inner.lock();
        make_room(&mut map, self.inner.max_entries, key, now);
        map.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires_at: deadline(now, ttl),
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let mut map = self.inner.lock();
        let now = Instant::now();
        Ok(map.remove(key).is_some_and(|e| e.live(now)))
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut map = self.inner.lock();
        if live(&mut map, key, now).is_some() {
            return Ok(false);
        }
        make_room(&mut map, self.inner.max_entries, key, now);
        map.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires_at: deadline(now, ttl),
            },
        );
        Ok(true)
    }

    async fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, CacheError> {
        let mut map = self.inner.lock();
        let owned = live(&mut map, key, Instant::now()).is_some_and(|e| e.value == expected);
        if owned {
            map.remove(key);
        }
        Ok(owned)
    }

    async fn incr_by(
        &self,
        key: &str,
        by: i64,
        ttl_on_create: Option<Duration>,
    ) -> Result<i64, CacheError> {
        let now = Instant::now();
        let mut map = self.inner.lock();
        if let Some(entry) = live(&mut map, key, now) {
            let current: i64 = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| CacheError::NotAnInteger {
                    key: key.to_owned(),
                })?;
            let next = current
                .checked_add(by)
                .ok_or_else(|| CacheError::NotAnInteger {
                    key: key.to_owned(),
                })?;
            entry.value = next.to_string().into_bytes();
            return Ok(next);
        }
        make_room(&mut map, self.inner.max_entries, key, now);
        map.insert(
            key.to_owned(),
            Entry {
                value: by.to_string().into_bytes(),
                expires_at: deadline(now, ttl_on_create),
            },
        );
        Ok(by)
    }

    async fn gcra(&self, key: &str, limit: RateLimit) -> Result<RateDecision, CacheError> {
        limit.validate()?;
        let now_instant = Instant::now();
        let now = gcra::micros(now_instant.duration_since(self.inner.epoch));
        let mut map = self.inner.lock();
        let stored = live(&mut map, key, now_instant)
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<i64>().ok());
        let (decision, new_tat) = gcra::step(now, stored, &limit);
        if let Some(tat) = new_tat {
            make_room(&mut map, self.inner.max_entries, key, now_instant);
            map.insert(
                key.to_owned(),
                Entry {
                    value: tat.to_string().into_bytes(),
                    expires_at: Some(now_instant + round_up_to_millis(decision.reset_after)),
                },
            );
        }
        Ok(decision)
    }

    async fn check(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_purged_periodically() {
        let cache = MemoryCache::new(100);
        cache
            .set("a", b"1", Some(Duration::from_secs(1)))
            .await
            .unwrap();
        cache.set("b", b"2", None).await.unwrap();
        assert_eq!(cache.len(), 2);
        // Nobody reads "a": only the purge task can remove it.
        tokio::time::sleep(PURGE_INTERVAL * 2).await;
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("b").await.unwrap(), Some(b"2".to_vec()));
    }

    #[tokio::test]
    async fn stays_within_max_entries() {
        let cache = MemoryCache::new(10);
        for i in 0..50 {
            cache.set(&format!("k{i}"), b"v", None).await.unwrap();
            assert!(cache.len() <= 10);
        }
        assert_eq!(cache.get("k49").await.unwrap(), Some(b"v".to_vec()));
    }

    #[tokio::test(start_paused = true)]
    async fn full_cache_drops_expired_entries_before_live_ones() {
        let cache = MemoryCache::new(3);
        cache
            .set("short", b"v", Some(Duration::from_millis(10)))
            .await
            .unwrap();
        cache.set("a", b"v", None).await.unwrap();
        cache.set("b", b"v", None).await.unwrap();
        tokio::time::advance(Duration::from_millis(20)).await;
        cache.set("c", b"v", None).await.unwrap();
        for key in ["a", "b", "c"] {
            assert!(cache.get(key).await.unwrap().is_some(), "{key}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gcra_refills_at_the_sustained_rate() {
        let cache = MemoryCache::new(10);
        let limit = RateLimit::per(10, Duration::from_secs(1)).with_burst(2);
        assert!(cache.gcra("k", limit).await.unwrap().allowed);
        assert!(cache.gcra("k", limit).await.unwrap().allowed);
        let denied = cache.gcra("k", limit).await.unwrap();
        assert!(!denied.allowed);
        tokio::time::advance(denied.retry_after).await;
        assert!(cache.gcra("k", limit).await.unwrap().allowed);
        assert!(!cache.gcra("k", limit).await.unwrap().allowed);
    }

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(
            round_up_to_millis(Duration::from_micros(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            round_up_to_millis(Duration::from_micros(1500)),
            Duration::from_millis(2)
        );
        assert_eq!(round_up_to_millis(Duration::ZERO), Duration::from_millis(1));
    }
}
