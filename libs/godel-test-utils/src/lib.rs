//! Test utilities: real services with per-test isolation.
//!
//! Every test gets its own PostgreSQL database, NATS subject/stream prefix and Redis
//! key prefix, so tests run in parallel and never see each other's leftovers. A test
//! that needs a service fails — it never skips — when the service is unreachable; run
//! `scripts/services.sh` to start them.

pub mod git;
pub mod identity;
pub mod llm;
pub mod nats;
pub mod oidc;
pub mod otlp;
pub mod postgres;
pub mod redis;

use std::future::Future;
use std::time::{Duration, Instant};

/// A name unique to this test run: `<prefix>_<12 hex chars>`, lowercase, usable as a
/// database name, a NATS stream/subject token or a Redis key prefix.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

/// Waits until `check` returns `Some`, polling every 20 ms, and returns its value.
/// Panics with `what` when `timeout` passes first.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads an environment variable or returns the default.
pub(crate) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Panics with a clear message naming the service and how to start it.
pub(crate) fn unreachable_service(service: &str, url: &str, err: impl std::fmt::Display) -> ! {
    panic!(
        "{service} is required by this test but unreachable at {url}: {err}. \
         Start the services with `scripts/services.sh` (tests never skip a missing service)."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_safe() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }

    #[tokio::test]
    async fn eventually_returns_when_condition_holds() {
        let mut n = 0;
        let v = eventually("n reaches 3", Duration::from_secs(1), || {
            n += 1;
            let r = (n >= 3).then_some(n);
            async move { r }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out")]
    async fn eventually_panics_on_timeout() {
        eventually("never", Duration::from_millis(50), || async { None::<()> }).await;
    }
}
