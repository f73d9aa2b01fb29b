//! The auth service's configuration.

use godel_bus::{BusConfig, BusKind};
use godel_config::Secret;
use godel_runtime::ServerConfig;
use godel_store::DatabaseConfig;
use godel_telemetry::TelemetryConfig;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oidc::config::OidcConfig;

/// Every setting of the auth service. Defaults are the production shape:
/// PostgreSQL (schema `auth`) and NATS on localhost; `godel up` overrides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub telemetry: TelemetryConfig,
    pub tokens: TokenConfig,
    /// Single sign-on with OpenID Connect identity providers.
    pub oidc: OidcConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            database: DatabaseConfig {
                url: Secret::new("postgres://postgres@127.0.0.1:5432/godel".to_owned()),
                schema: Some("auth".to_owned()),
                ..DatabaseConfig::default()
            },
            bus: BusConfig {
                kind: BusKind::Nats,
                ..BusConfig::default()
            },
            telemetry: TelemetryConfig {
                service_name: "godel-auth".to_owned(),
                ..TelemetryConfig::default()
            },
            tokens: TokenConfig::default(),
            oidc: OidcConfig::default(),
        }
    }
}

impl godel_runtime::entry::ServiceConfig for AuthConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

/// Godel-issued tokens: who issues them, for whom, and how long they live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// The `iss` of access tokens (a URL in production, for example
    /// `https://godel.example.com`).
    pub issuer: String,
    /// The `aud` of access tokens: the API that accepts them.
    pub audience: String,
    /// Lifetime of an access token.
    #[serde(with = "godel_config::duration")]
    pub access_ttl: Duration,
    /// Absolute lifetime of a sign-in session (a refresh-token family): refreshing
    /// never extends it.
    #[serde(with = "godel_config::duration")]
    pub session_lifetime: Duration,
    /// Clock skew tolerated when checking `exp` and `nbf`.
    #[serde(with = "godel_config::duration")]
    pub leeway: Duration,
    /// How often the signing key is replaced by a new one (by whichever replica
    /// notices first; old keys keep verifying until their tokens expire). `0s`
    /// turns scheduled rotation off.
    #[serde(with = "godel_config::duration")]
    pub rotate_every: Duration,
    /// 32 bytes, base64: when set, signing keys are stored encrypted under it
    /// (XChaCha20-Poly1305); when unset, they are stored plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_encryption_key: Option<Secret<String>>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: "godel".to_owned(),
            audience: "godel-api".to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            session_lifetime: Duration::from_secs(7 * 24 * 3600),
            leeway: Duration::from_secs(30),
            rotate_every: Duration::from_secs(30 * 24 * 3600),
            signing_key_encryption_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_settings_round_trip_and_take_duration_strings() {
        let config = AuthConfig::default();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["tokens"]["access_ttl"], "15m");
        // (The database URL is a secret and serializes redacted, so compare tokens.)
        let back: TokenConfig = serde_json::from_value(json["tokens"].clone()).unwrap();
        assert_eq!(back, config.tokens);

        let partial: AuthConfig = serde_json::from_value(serde_json::json!({
            "tokens": { "issuer": "https://godel.example.com", "access_ttl": "5m" }
        }))
        .unwrap();
        assert_eq!(partial.tokens.access_ttl, Duration::from_secs(300));
        assert_eq!(partial.tokens.issuer, "https://godel.example.com");
        assert_eq!(partial.tokens.audience, "godel-api");
        assert!(
            serde_json::from_value::<AuthConfig>(serde_json::json!({
                "tokens": { "acess_ttl": "5m" }
            }))
            .is_err()
        );
    }
}
