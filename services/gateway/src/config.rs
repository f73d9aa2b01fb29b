//! The gateway's configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use godel_bus::{BusConfig, BusKind};
use godel_cache::{CacheConfig, CacheKind};
use godel_config::Secret;
use godel_identity::IdentityConfig;
use godel_runtime::ServerConfig;
use godel_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

/// Every setting of the gateway. Defaults are the production shape: Redis on
/// localhost and the internal services at their Kubernetes service names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub server: ServerConfig,
    pub upstreams: UpstreamsConfig,
    pub cache: CacheConfig,
    /// The event bus the task and plan event streams read (NATS JetStream in
    /// production, the in-process bus in `godel up`).
    pub bus: BusConfig,
    pub telemetry: TelemetryConfig,
    /// How callers' access tokens are verified (the auth service's key set). Left at
    /// its default, `auth_url` is ignored and keys are read through `upstreams.auth`.
    pub identity: IdentityConfig,
    pub api: ApiConfig,
    pub rate_limit: RateLimitConfig,
    pub audit: AuditConfig,
    /// Browser and CLI sign-in through the identity providers auth is configured
    /// with (`/auth/…`).
    pub login: LoginConfig,
}

/// gRPC addresses (`http://host:port`) of the internal services. Each is one address
/// (a Kubernetes Service) or several, comma-separated, that the gateway balances over
/// itself, sending calls only to instances whose health service reports `SERVING`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamsConfig {
    pub auth: String,
    pub scheduler: String,
    pub orchestrator: String,
    pub audit: String,
    /// How often each instance of an upstream with several addresses is probed.
    #[serde(with = "godel_config::duration")]
    pub probe_interval: Duration,
}

impl Default for UpstreamsConfig {
    fn default() -> Self {
        Self {
            auth: "http://godel-auth:9090".to_owned(),
            scheduler: "http://godel-scheduler:9090".to_owned(),
            orchestrator: "http://godel-orchestrator:9090".to_owned(),
            audit: "http://godel-audit:9090".to_owned(),
            probe_interval: Duration::from_millis(500),
        }
    }
}

/// The REST API's request handling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long the token an API key was exchanged for is reused before asking auth
    /// again: the longest a revoked key keeps working. Never past the token's expiry.
    #[serde(with = "godel_config::duration")]
    pub api_key_cache_ttl: Duration,
    /// Most API keys whose tokens are cached at once.
    pub api_key_cache_entries: usize,
    /// Deadline of every call to an internal service.
    #[serde(with = "godel_config::duration")]
    pub upstream_timeout: Duration,
    /// Take the client's address for audit records from the first
    /// `X-Forwarded-For` hop: only behind a load balancer that sets it.
    pub trust_forwarded_for: bool,
    /// How often an idle server-sent event stream sends a keep-alive comment, so
    /// proxies and load balancers do not close it.
    #[serde(with = "godel_config::duration")]
    pub sse_keep_alive: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            api_key_cache_ttl: Duration::from_secs(30),
            api_key_cache_entries: 10_000,
            upstream_timeout: Duration::from_secs(10),
            trust_forwarded_for: false,
            sse_keep_alive: Duration::from_secs(15),
        }
    }
}

/// What happens to requests when the shared rate-limit store (Redis) fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCacheError {
    /// Keep serving, limited by an in-process limiter per gateway replica (each
    /// replica then allows up to the full limit), counted in
    /// `godel_gateway_rate_limit_fallback_total`.
    #[default]
    FailOpen,
    /// Refuse every request with 503 until the store answers again.
    FailClosed,
}

/// Per-principal request rate limits (GCRA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Turns rate limiting off entirely.
    pub enabled: bool,
    /// Requests per minute per principal (user or API key), unless its team's quota
    /// (`rate_limit_per_minute` in auth) or `api_keys` says otherwise.
    pub per_minute: u32,
    /// Overrides for single API keys: `key_…` → requests per minute. Wins over the
    /// team's quota.
    pub api_keys: BTreeMap<String, u32>,
    /// How long a team's quota read from auth is reused.
    #[serde(with = "godel_config::duration")]
    pub team_quota_ttl: Duration,
    pub on_cache_error: OnCacheError,
    /// Failed authentications per minute per client address (shared by replicas).
    /// Past it, that address's API keys are refused with 429 without asking auth,
    /// until the budget recovers; access tokens are still verified (locally).
    pub failed_auth_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_minute: 1000,
            api_keys: BTreeMap::new(),
            team_quota_ttl: Duration::from_secs(60),
            on_cache_error: OnCacheError::FailOpen,
            failed_auth_per_minute: 60,
        }
    }
}

/// The audit record of every API call, sent to the audit service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The gateway's own credential for `Append`: an API key holding the
    /// `audit-writer` organisation role. A secret: set it through
    /// `GODEL_AUDIT__API_KEY` or a file readable only by the gateway. Unset: API
    /// calls are not audited (a warning is logged at start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret<String>>,
    /// Records waiting to be sent; when full, new records are dropped and counted in
    /// `godel_gateway_audit_dropped_total` (a request never waits for the audit).
    pub queue_capacity: usize,
    /// Most records per `Append` call.
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill.
    #[serde(with = "godel_config::duration")]
    pub flush_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            queue_capacity: 10_000,
            batch_size: 500,
            flush_interval: Duration::from_millis(200),
        }
    }
}

/// Sign-in through an identity provider: `/auth/login` and `/auth/callback` for
/// browsers (session cookies), `/auth/cli/…` for `godel login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// The gateway's public origin (`https://godel.example.com`). The identity
    /// providers send browsers back to `<public_url>/auth/callback`: register that
    /// redirect URI at each provider and in auth's `oidc.providers[].redirect_uris`.
    /// Unset: the `/auth` routes answer 404 (sign-in through API keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Mark cookies `Secure`. Can be turned off only when `public_url` is a plain
    /// `http://` loopback origin (`godel up`).
    pub secure_cookies: bool,
    /// How long a browser may take between `/auth/login` and `/auth/callback` (also
    /// bounded by auth's `oidc.login_timeout`).
    #[serde(with = "godel_config::duration")]
    pub flow_timeout: Duration,
    /// How long the one-time code handed to `godel login`'s loopback listener can
    /// be exchanged at `/auth/cli/token`.
    #[serde(with = "godel_config::duration")]
    pub cli_code_ttl: Duration,
    /// A session's access token is renewed (refresh token rotated) by the request
    /// that finds it expiring within this margin.
    #[serde(with = "godel_config::duration")]
    pub refresh_margin: Duration,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            secure_cookies: true,
            flow_timeout: Duration::from_secs(10 * 60),
            cli_code_ttl: Duration::from_secs(60),
            refresh_margin: Duration::from_secs(30),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            upstreams: UpstreamsConfig::default(),
            cache: CacheConfig {
                kind: CacheKind::Redis,
                ..CacheConfig::default()
            },
            bus: BusConfig {
                kind: BusKind::Nats,
                ..BusConfig::default()
            },
            telemetry: TelemetryConfig {
                service_name: "godel-gateway".to_owned(),
                ..TelemetryConfig::default()
            },
            identity: IdentityConfig::default(),
            api: ApiConfig::default(),
            rate_limit: RateLimitConfig::default(),
            audit: AuditConfig::default(),
            login: LoginConfig::default(),
        }
    }
}

impl godel_runtime::entry::ServiceConfig for GatewayConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_audit_key_is_read_but_never_printed() {
        let config: GatewayConfig = serde_json::from_str(
            r#"{"audit":{"api_key":"gdl_secret"},"rate_limit":{"per_minute":5,"on_cache_error":"fail_closed","api_keys":{"key_x":9}},"api":{"api_key_cache_ttl":"5s"}}"#,
        )
        .unwrap();
        assert_eq!(
            config.audit.api_key.as_ref().map(|k| k.expose().as_str()),
            Some("gdl_secret")
        );
        assert_eq!(config.rate_limit.on_cache_error, OnCacheError::FailClosed);
        assert_eq!(config.rate_limit.api_keys["key_x"], 9);
        assert_eq!(config.api.api_key_cache_ttl, Duration::from_secs(5));
        let shown = serde_json::to_string(&config).unwrap();
        assert!(!shown.contains("gdl_secret"), "{shown}");
        assert_eq!(GatewayConfig::default().rate_limit.per_minute, 1000);
    }
}
