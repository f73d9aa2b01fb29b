//! The cache conformance suite: every case runs against the in-process cache and
//! against Redis (a real server, see `godel_test_utils::redis`) with a key prefix
//! unique to the test.

// The case bodies are shared test code outside `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use godel_cache::{Cache, CacheConfig, CacheError, RateLimit};
use godel_test_utils::eventually;
use godel_test_utils::redis::TestRedis;

const PROMPT: Duration = Duration::from_secs(10);

fn memory_cache() -> Arc<dyn Cache> {
    Arc::new(godel_cache::MemoryCache::new(10_000))
}

async fn redis_cache() -> (Arc<dyn Cache>, TestRedis) {
    let redis = TestRedis::new().await;
    let cache = godel_cache::connect(&CacheConfig::redis(&redis.url, &redis.key_prefix))
        .await
        .expect("connect to Redis");
    (cache, redis)
}

async fn get_set_delete_and_ttl(cache: Arc<dyn Cache>) {
    assert_eq!(cache.get("k").await.unwrap(), None);
    cache.set("k", b"v1", None).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(b"v1".to_vec()));
    cache.set("k", b"v2", None).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(b"v2".to_vec()));
    assert!(cache.delete("k").await.unwrap());
    assert!(!cache.delete("k").await.unwrap());
    assert_eq!(cache.get("k").await.unwrap(), None);

    cache
        .set("short", b"x", Some(Duration::from_millis(200)))
        .await
        .unwrap();
    cache.set("forever", b"y", None).await.unwrap();
    assert_eq!(cache.get("short").await.unwrap(), Some(b"x".to_vec()));
    eventually("the short-lived key expires", PROMPT, || {
        let cache = cache.clone();
        async move { cache.get("short").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert_eq!(cache.get("forever").await.unwrap(), Some(b"y".to_vec()));
    cache.check().await.unwrap();
}

async fn set_if_absent_has_one_winner(cache: Arc<dyn Cache>) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let owner = format!("owner-{i}");
                let won = cache
                    .set_if_absent("lease", owner.as_bytes(), Some(Duration::from_secs(30)))
                    .await
                    .unwrap();
                won.then_some(owner)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in futures::future::join_all(tasks).await {
        winners.extend(task.unwrap());
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one task takes the lease: {winners:?}"
    );
    assert_eq!(
        cache.get("lease").await.unwrap(),
        Some(winners[0].as_bytes().to_vec())
    );

    // An expired lease can be taken again.
    assert!(
        cache
            .set_if_absent("short-lease", b"a", Some(Duration::from_millis(100)))
            .await
            .unwrap()
    );
    assert!(
        !cache
            .set_if_absent("short-lease", b"b", None)
            .await
            .unwrap()
    );
    eventually("the expired lease can be taken", PROMPT, || {
        let cache = cache.clone();
        async move {
            cache
                .set_if_absent("short-lease", b"b", None)
                .await
                .unwrap()
                .then_some(())
        }
    })
    .await;
    assert_eq!(cache.get("short-lease").await.unwrap(), Some(b"b".to_vec()));
}

async fn compare_and_delete_only_for_the_owner(cache: Arc<dyn Cache>) {
    cache.set("lock", b"me", None).await.unwrap();
    assert!(
        !cache
            .compare_and_delete("lock", b"someone-else")
            .await
            .unwrap()
    );
    assert_eq!(cache.get("lock").await.unwrap(), Some(b"me".to_vec()));
    assert!(cache.compare_and_delete("lock", b"me").await.unwrap());
    assert_eq!(cache.get("lock").await.unwrap(), None);
    assert!(!cache.compare_and_delete("lock", b"me").await.unwrap());
}

async fn incr_by_counts_and_keeps_the_first_ttl(cache: Arc<dyn Cache>) {
    assert_eq!(cache.incr_by("n", 1, None).await.unwrap(), 1);
    assert_eq!(cache.incr_by("n", 5, None).await.unwrap(), 6);
    assert_eq!(cache.incr_by("n", -10, None).await.unwrap(), -4);
    assert_eq!(cache.get("n").await.unwrap(), Some(b"-4".to_vec()));

    let ttl = Some(Duration::from_millis(300));
    assert_eq!(cache.incr_by("window", 1, ttl).await.unwrap(), 1);
    // A later increment with a long TTL does not extend the window.
    assert_eq!(
        cache.incr_by("window", 1, Some(PROMPT * 10)).await.unwrap(),
        2
    );
    eventually("the counter window expires", PROMPT, || {
        let cache = cache.clone();
        async move { cache.get("window").await.unwrap().is_none().then_some(()) }
    })
    .await;
    assert_eq!(cache.incr_by("window", 1, ttl).await.unwrap(), 1);

    cache.set("text", b"abc", None).await.unwrap();
    assert!(matches!(
        cache.incr_by("text", 1, None).await,
        Err(CacheError::NotAnInteger { .. })
    ));

    // Concurrent increments are not lost.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.incr_by("concurrent", 2, None).await.unwrap() })
        })
        .collect();
    futures::future::join_all(tasks).await;
    assert_eq!(
        cache.get("concurrent").await.unwrap(),
        Some(b"100".to_vec())
    );
}

async fn gcra_allows_exactly_the_burst(cache: Arc<dyn Cache>) {
    // 10 per minute with a burst of 5: the sixth request in a row is denied, and the
    // next one is allowed 6 s (one emission interval) after the first.
    let limit = RateLimit::per(10, Duration::from_secs(60)).with_burst(5);
    let mut decisions = Vec::new();
    for _ in 0..8 {
        decisions.push(cache.gcra("rl:team", limit).await.unwrap());
    }
    let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [true, true, true, true, true, false, false, false]);
    let remaining: Vec<u32> = decisions[..5].iter().map(|d| d.remaining).collect();
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    for denied in &decisions[5..] {
        assert_eq!(denied.remaining, 0);
        assert!(
            denied.retry_after > Duration::from_secs(5)
                && denied.retry_after <= Duration::from_secs(6),
            "retry_after is about one emission interval: {denied:?}"
        );
        assert!(
            denied.reset_after > Duration::from_secs(29)
                && denied.reset_after <= Duration::from_secs(30),
            "reset_after is about burst × interval: {denied:?}"
        );
    }
    // Keys are independent.
    assert!(cache.gcra("rl:other-team", limit).await.unwrap().allowed);

    // A fast limit refills: 20 per second with a burst of 2.
    let fast = RateLimit::per(20, Duration::from_secs(1)).with_burst(2);
    assert!(cache.gcra("rl:fast", fast).await.unwrap().allowed);
    assert!(cache.gcra("rl:fast", fast).await.unwrap().allowed);
    assert!(!cache.gcra("rl:fast", fast).await.unwrap().allowed);
    eventually("the fast limit refills", PROMPT, || {
        let cache = cache.clone();
        async move {
            cache
                .gcra("rl:fast", fast)
                .await
                .unwrap()
                .allowed
                .then_some(())
        }
    })
    .await;

    assert!(matches!(
        cache
            .gcra("rl:bad", RateLimit::per(0, Duration::from_secs(1)))
            .await,
        Err(CacheError::InvalidRateLimit { .. })
    ));
}

async fn gcra_is_atomic_under_concurrency(cache: Arc<dyn Cache>) {
    let limit = RateLimit::per(10, Duration::from_secs(3600)).with_burst(10);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.gcra("rl:shared", limit).await.unwrap().allowed })
        })
        .collect();
    let allowed = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(allowed, 10);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::memory_cache()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let (cache, redis) = super::redis_cache().await;
                    super::$case(cache).await;
                    redis.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    get_set_delete_and_ttl,
    set_if_absent_has_one_winner,
    compare_and_delete_only_for_the_owner,
    incr_by_counts_and_keeps_the_first_ttl,
    gcra_allows_exactly_the_burst,
    gcra_is_atomic_under_concurrency,
);

/// Two `RedisCache`s with their own pools (two gateway replicas) share one limit.
#[tokio::test]
async fn redis_replicas_share_one_limit() {
    let redis = TestRedis::new().await;
    let config = CacheConfig::redis(&redis.url, &redis.key_prefix);
    let replica_a = godel_cache::connect(&config).await.unwrap();
    let replica_b = godel_cache::connect(&config).await.unwrap();
    let limit = RateLimit::per(6, Duration::from_secs(3600)).with_burst(6);

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let cache = if i % 2 == 0 {
                replica_a.clone()
            } else {
                replica_b.clone()
            };
            tokio::spawn(async move { cache.gcra("rl:team", limit).await.unwrap().allowed })
        })
        .collect();
    let allowed = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(allowed, 6, "both replicas together allow exactly the burst");
    assert!(!replica_a.gcra("rl:team", limit).await.unwrap().allowed);
    assert!(!replica_b.gcra("rl:team", limit).await.unwrap().allowed);
    redis.cleanup().await;
}

/// Keys of different prefixes never meet.
#[tokio::test]
async fn redis_key_prefixes_isolate() {
    let redis = TestRedis::new().await;
    let a = godel_cache::connect(&CacheConfig::redis(
        &redis.url,
        format!("{}_a", redis.key_prefix),
    ))
    .await
    .unwrap();
    let b = godel_cache::connect(&CacheConfig::redis(
        &redis.url,
        format!("{}_b", redis.key_prefix),
    ))
    .await
    .unwrap();
    a.set("k", b"a", None).await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), None);
    assert_eq!(a.get("k").await.unwrap(), Some(b"a".to_vec()));
    redis.cleanup().await;
}

/// An unreachable server fails `connect` with the url in the message.
#[tokio::test]
async fn redis_connect_fails_clearly_when_unreachable() {
    let mut config = CacheConfig::redis("redis://127.0.0.1:1", "x");
    config.connect_timeout = Duration::from_secs(2);
    let err = godel_cache::connect(&config)
        .await
        .err()
        .expect("connect fails");
    assert!(err.to_string().contains("redis://127.0.0.1:1"), "{err}");
}
