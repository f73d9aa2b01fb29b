//! Per-principal request rate limits: GCRA through [`godel_cache::Cache`], atomic in
//! Redis so every gateway replica shares one limit (in-process under `godel up`).
//!
//! The limit of a principal is, first match wins: `rate_limit.api_keys[key_…]`, its
//! team's `rate_limit_per_minute` quota in auth (read with the caller's own token and
//! cached for `rate_limit.team_quota_ttl`), `rate_limit.per_minute`. The burst equals
//! the per-minute limit.
//!
//! When the shared store fails, `rate_limit.on_cache_error` decides: `fail_open`
//! (default) limits each replica on its own with an in-process GCRA and counts
//! `godel_gateway_rate_limit_fallback_total`; `fail_closed` answers 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use godel_cache::{Cache, MemoryCache, RateLimit};
use godel_error::Error;
use godel_identity::{Caller, Principal};
use godel_proto::auth::v1::GetQuotasRequest;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_types::TeamId;
use http::{HeaderMap, HeaderValue};
use tonic::transport::Channel;

use crate::authn::Authenticated;
use crate::config::{OnCacheError, RateLimitConfig};

/// The outcome of one request against its principal's limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    limit: u32,
    remaining: u32,
    retry_after: Duration,
    reset_after: Duration,
}

impl Decision {
    /// Writes `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (and
    /// `Retry-After` when refused).
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert(
            "ratelimit-reset",
            HeaderValue::from(ceil_secs(self.reset_after)),
        );
        if !self.allowed {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(self.retry_after).max(1)),
            );
        }
    }

    /// The 429 problem for a refused request.
    pub(crate) fn error(&self) -> Error {
        Error::resource_exhausted(
            format!("rate limit of {} requests per minute exceeded", self.limit),
            Some(Duration::from_secs(ceil_secs(self.retry_after).max(1))),
        )
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

struct CachedQuota {
    per_minute: Option<u32>,
    until: Instant,
}

pub(crate) struct RateLimiter {
    config: RateLimitConfig,
    shared: Arc<dyn Cache>,
    local: MemoryCache,
    auth: AuthServiceClient<Channel>,
    quotas: Mutex<HashMap<TeamId, CachedQuota>>,
    /// Client addresses past their failed-authentication budget, until when.
    blocked: Mutex<HashMap<String, Instant>>,
}

/// Most client addresses remembered as blocked; the oldest blocks go first.
const MAX_BLOCKED: usize = 100_000;

impl RateLimiter {
    pub(crate) fn new(
        config: RateLimitConfig,
        shared: Arc<dyn Cache>,
        auth: AuthServiceClient<Channel>,
    ) -> Self {
        Self {
            config,
            shared,
            local: MemoryCache::new(100_000),
            auth,
            quotas: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// How long `client` stays refused for failing to authenticate too often;
    /// `None` when it is not.
    pub(crate) fn blocked_for(&self, client: &str) -> Option<Duration> {
        if !self.config.enabled {
            return None;
        }
        let now = Instant::now();
        let mut blocked = self.blocked.lock().ok()?;
        match blocked.get(client) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                blocked.remove(client);
                None
            }
            None => None,
        }
    }

    /// Counts a failed authentication from `client` against its budget (shared by
    /// replicas; in process when the store fails); past it, the address is blocked
    /// here until the budget recovers.
    pub(crate) async fn failed_authentication(&self, client: &str) {
        if !self.config.enabled {
            return;
        }
        let limit = RateLimit::per(
            self.config.failed_auth_per_minute.max(1),
            Duration::from_secs(60),
        );
        let key = format!("gateway:authfail:{client}");
        let decision = match self.shared.gcra(&key, limit).await {
            Ok(decision) => decision,
            Err(_) => match self.local.gcra(&key, limit).await {
                Ok(decision) => decision,
                Err(_) => return,
            },
        };
        if decision.allowed {
            return;
        }
        metrics::counter!("godel_gateway_auth_failures_blocked_total").increment(1);
        tracing::warn!(
            client,
            "too many failed authentications; refusing its API keys for now"
        );
        if let Ok(mut blocked) = self.blocked.lock() {
            if blocked.len() >= MAX_BLOCKED {
                let now = Instant::now();
                blocked.retain(|_, until| *until > now);
                if blocked.len() >= MAX_BLOCKED
                    && let Some(oldest) = blocked
                        .iter()
                        .min_by_key(|(_, u)| **u)
                        .map(|(k, _)| k.clone())
                {
                    blocked.remove(&oldest);
                }
            }
            blocked.insert(
                client.to_owned(),
                Instant::now() + decision.retry_after.max(Duration::from_secs(1)),
            );
        }
    }

    /// Counts one request of `who`; `None` when rate limiting is off.
    pub(crate) async fn check(&self, who: &Authenticated) -> Result<Option<Decision>, Error> {
        if !self.config.enabled {
            return Ok(None);
        }
        let per_minute = self.per_minute(who).await.max(1);
        let limit = RateLimit::per(per_minute, Duration::from_secs(60));
        let key = format!("gateway:rate:{}", who.caller.principal);
        let decision = match self.shared.gcra(&key, limit).await {
            Ok(decision) => decision,
            Err(e) => {
                metrics::counter!("godel_gateway_rate_limit_fallback_total").increment(1);
                match self.config.on_cache_error {
                    OnCacheError::FailOpen => {
                        tracing::warn!(error = %godel_error::chain(&e), "the rate-limit store failed; limiting in process");
                        self.local
                            .gcra(&key, limit)
                            .await
                            .map_err(|e| Error::internal(format!("in-process rate limit: {e}")))?
                    }
                    OnCacheError::FailClosed => {
                        tracing::error!(error = %godel_error::chain(&e), "the rate-limit store failed; refusing requests");
                        return Err(Error::unavailable(
                            "rate limits cannot be checked right now; retry later",
                        ));
                    }
                }
            }
        };
        if !decision.allowed {
            metrics::counter!("godel_gateway_rate_limited_total").increment(1);
        }
        Ok(Some(Decision {
            allowed: decision.allowed,
            limit: per_minute,
            remaining: decision.remaining,
            retry_after: decision.retry_after,
            reset_after: decision.reset_after,
        }))
    }

    async fn per_minute(&self, who: &Authenticated) -> u32 {
        if let Principal::ApiKey(key) = who.caller.principal
            && let Some(&n) = self.config.api_keys.get(&key.to_string())
        {
            return n;
        }
        match who.caller.team {
            Some(team) => self
                .team_quota(team, who)
                .await
                .unwrap_or(self.config.per_minute),
            None => self.config.per_minute,
        }
    }

    /// The team's `rate_limit_per_minute`, cached; `None` when it has none or it
    /// cannot be read.
    async fn team_quota(&self, team: TeamId, who: &Authenticated) -> Option<u32> {
        {
            let quotas = self
                .quotas
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(q) = quotas.get(&team).filter(|q| q.until > Instant::now()) {
                return q.per_minute;
            }
        }
        let per_minute = self.read_quota(team, &who.caller, &who.token).await;
        let mut quotas = self
            .quotas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if quotas.len() > 100_000 {
            quotas.clear();
        }
        quotas.insert(
            team,
            CachedQuota {
                per_minute,
                until: Instant::now() + self.config.team_quota_ttl,
            },
        );
        per_minute
    }

    async fn read_quota(&self, team: TeamId, caller: &Caller, token: &str) -> Option<u32> {
        let mut request = tonic::Request::new(GetQuotasRequest {
            team_id: team.to_string(),
        });
        godel_identity::attach_token(&mut request, token).ok()?;
        match self.auth.clone().get_quotas(request).await {
            Ok(response) => response
                .into_inner()
                .quotas
                .and_then(|q| q.rate_limit_per_minute),
            Err(status) => {
                tracing::debug!(principal = %caller.principal, %team, error = %status.message(), "team quotas not readable; using the default rate limit");
                None
            }
        }
    }
}
