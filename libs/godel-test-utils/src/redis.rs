//! A Redis server and a unique key prefix per test.
//!
//! `TestRedis::new()` checks the server answers `PING` (it panics otherwise) and hands
//! out a key prefix no other test uses. When dropped it deletes the keys under its
//! prefix on a best-effort basis (without blocking the runtime).

use std::time::Duration;

use deadpool_redis::redis;

use crate::{env_or, unique_name, unreachable_service};

/// Environment variable naming the Redis server used by tests.
pub const REDIS_URL_ENV: &str = "GODEL_TEST_REDIS_URL";
/// Default Redis url for tests.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A reachable Redis server with a key prefix unique to one test.
#[derive(Debug)]
pub struct TestRedis {
    /// Server url, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// A prefix unique to this test (e.g. `godel_test_…`), without a separator.
    pub key_prefix: String,
    client: redis::Client,
}

impl TestRedis {
    /// Connects to the test Redis server (env `GODEL_TEST_REDIS_URL`, default
    /// `redis://127.0.0.1:6379`). Panics when it is unreachable.
    pub async fn new() -> Self {
        let url = env_or(REDIS_URL_ENV, DEFAULT_REDIS_URL);
        let client = match redis::Client::open(url.as_str()) {
            Ok(client) => client,
            Err(err) => unreachable_service("Redis", &url, err),
        };
        let ping = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(Duration::from_secs(5), ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => unreachable_service("Redis", &url, err),
            Err(_) => unreachable_service("Redis", &url, "no answer to PING within 5s"),
        }
        Self {
            url,
            key_prefix: unique_name("godel_test"),
            client,
        }
    }

    /// Deletes every key under this test's prefix and waits for it.
    pub async fn cleanup(&self) {
        let _ = delete_prefixed(self.client.clone(), self.key_prefix.clone()).await;
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let prefix = std::mem::take(&mut self.key_prefix);
        handle.spawn(async move {
            let _ = delete_prefixed(client, prefix).await;
        });
    }
}

async fn delete_prefixed(client: redis::Client, prefix: String) -> redis::RedisResult<()> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{prefix}*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<i64>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hands_out_unique_prefixes_and_cleans_up() {
        let a = TestRedis::new().await;
        let b = TestRedis::new().await;
        assert_ne!(a.key_prefix, b.key_prefix);

        let client = redis::Client::open(a.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = format!("{}:k", a.key_prefix);
        redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        a.cleanup().await;
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0);
    }
}
