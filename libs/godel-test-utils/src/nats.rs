//! A NATS connection and a unique subject/stream prefix per test.
//!
//! `TestNats::new()` checks that the server is reachable (it panics otherwise), and
//! hands out a stream name and a subject prefix no other test uses. The stream itself
//! is created by whatever the test wires (normally `godel_bus::NatsBus`); when the
//! `TestNats` is dropped the stream is deleted on a best-effort basis, and every
//! `TestNats::new()` also deletes test streams left behind by runs more than an hour
//! old, so the server does not fill up with leftovers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use crate::{env_or, unique_name, unreachable_service};

/// Environment variable naming the NATS server used by tests.
pub const NATS_URL_ENV: &str = "GODEL_TEST_NATS_URL";
/// Default NATS url for tests.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Prefix of every stream name handed out by [`TestNats`].
const STREAM_PREFIX: &str = "godel_test";
/// Test streams older than this are deleted by the next `TestNats::new()`.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// A reachable NATS server with a stream name and subject prefix unique to one test.
#[derive(Debug)]
pub struct TestNats {
    /// Server url, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// A single subject token to prepend to every subject (e.g. `godel_test_…`).
    pub subject_prefix: String,
    /// A JetStream stream name unique to this test.
    pub stream_name: String,
    client: async_nats::Client,
}

impl TestNats {
    /// Connects to the test NATS server (env `GODEL_TEST_NATS_URL`, default
    /// `nats://127.0.0.1:4222`). Panics when it is unreachable or has no JetStream.
    pub async fn new() -> Self {
        let url = env_or(NATS_URL_ENV, DEFAULT_NATS_URL);
        let client = match async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url.as_str())
            .await
        {
            Ok(client) => client,
            Err(err) => unreachable_service("NATS", &url, err),
        };
        // A raw account-info request: its answer shape differs between server versions.
        match client.request("$JS.API.INFO", "".into()).await {
            Ok(reply) if !String::from_utf8_lossy(&reply.payload).contains("\"error\"") => {}
            Ok(reply) => unreachable_service(
                "NATS JetStream",
                &url,
                String::from_utf8_lossy(&reply.payload),
            ),
            Err(err) => unreachable_service("NATS JetStream", &url, err),
        }
        let js = async_nats::jetstream::new(client.clone());
        delete_stale_streams(&js).await;

        let name = unique_name(&format!("{STREAM_PREFIX}_{}", unix_secs()));
        Self {
            url,
            subject_prefix: name.clone(),
            stream_name: name,
            client,
        }
    }

    /// A client connected to the test server (for assertions made around the bus).
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// Deletes this test's stream now and waits for the answer.
    pub async fn cleanup(&self) {
        let js = async_nats::jetstream::new(self.client.clone());
        // The stream may not exist (the test never created it): nothing to do then.
        let _ = js.delete_stream(&self.stream_name).await;
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let js = async_nats::jetstream::new(self.client.clone());
        let stream = std::mem::take(&mut self.stream_name);
        handle.spawn(async move {
            let _ = js.delete_stream(&stream).await;
        });
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Deletes `godel_test_<unix secs>_…` streams created more than [`STALE_AFTER`] ago.
async fn delete_stale_streams(js: &async_nats::jetstream::Context) {
    let now = unix_secs();
    let mut names = js.stream_names();
    let mut stale = Vec::new();
    while let Some(Ok(name)) = names.next().await {
        let created = name
            .strip_prefix(STREAM_PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if let Some(created) = created
            && now.saturating_sub(created) > STALE_AFTER.as_secs()
        {
            stale.push(name);
        }
    }
    for name in stale {
        let _ = js.delete_stream(&name).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hands_out_unique_names_on_a_reachable_server() {
        let a = TestNats::new().await;
        let b = TestNats::new().await;
        assert_ne!(a.stream_name, b.stream_name);
        assert_ne!(a.subject_prefix, b.subject_prefix);
        assert!(a.stream_name.starts_with("godel_test_"));
        assert!(!a.subject_prefix.contains(['.', '*', '>', ' ']));
        a.client().flush().await.unwrap();
    }

    #[tokio::test]
    async fn cleanup_deletes_the_stream() {
        let nats = TestNats::new().await;
        let js = async_nats::jetstream::new(nats.client());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: nats.stream_name.clone(),
            subjects: vec![format!("{}.>", nats.subject_prefix)],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(js.get_stream(&nats.stream_name).await.is_ok());
        nats.cleanup().await;
        assert!(js.get_stream(&nats.stream_name).await.is_err());
    }
}
