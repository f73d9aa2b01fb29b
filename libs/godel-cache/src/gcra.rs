//! The generic cell rate algorithm, in microseconds. The in-process cache calls
//! [`step`]; the Redis script in `redis.rs` is the same arithmetic in Lua.
//!
//! State per key is the theoretical arrival time (TAT) of the next request. With
//! `T` = emission interval and `B` = burst: `tat = max(stored, now)`,
//! `new_tat = tat + T`, `allow_at = new_tat - B·T`. A request is allowed when
//! `now >= allow_at`, and then `new_tat` is stored (with a TTL of `new_tat - now`,
//! after which the key is idle anyway). `remaining = ⌊(now - allow_at) / T⌋`;
//! a denied request gets `retry_after = allow_at - now`.

use std::time::Duration;

use crate::{RateDecision, RateLimit};

/// One request at `now` against the stored TAT; returns the decision and, when
/// allowed, the TAT to store.
pub(crate) fn step(
    now: i64,
    stored_tat: Option<i64>,
    limit: &RateLimit,
) -> (RateDecision, Option<i64>) {
    let emission = micros(limit.emission_interval()).max(1);
    let tolerance = emission.saturating_mul(i64::from(limit.burst));
    let tat = stored_tat.map_or(now, |t| t.max(now));
    let new_tat = tat.saturating_add(emission);
    let allow_at = new_tat - tolerance;
    if now < allow_at {
        let decision = RateDecision {
            allowed: false,
            remaining: 0,
            retry_after: from_micros(allow_at - now),
            reset_after: from_micros(tat - now),
        };
        return (decision, None);
    }
    let remaining = u32::try_from((now - allow_at) / emission).unwrap_or(u32::MAX);
    let decision = RateDecision {
        allowed: true,
        remaining,
        retry_after: Duration::ZERO,
        reset_after: from_micros(new_tat - now),
    };
    (decision, Some(new_tat))
}

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

pub(crate) fn from_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        // 10 per second, burst 3: T = 100ms.
        let limit = RateLimit::per(10, Duration::from_secs(1)).with_burst(3);
        let mut tat = None;
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let (d, new) = step(0, tat, &limit);
            assert!(d.allowed);
            remaining.push(d.remaining);
            tat = new;
        }
        assert_eq!(remaining, [2, 1, 0]);
        let (denied, none) = step(0, tat, &limit);
        assert!(!denied.allowed);
        assert!(none.is_none());
        assert_eq!(denied.retry_after, Duration::from_millis(100));
        assert_eq!(denied.reset_after, Duration::from_millis(300));

        // One emission interval later exactly one more request passes.
        let (d, new) = step(100_000, tat, &limit);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        let (d, _) = step(100_000, new, &limit);
        assert!(!d.allowed);

        // After reset_after the full burst is back.
        let (d, _) = step(1_000_000, new, &limit);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
    }
}
