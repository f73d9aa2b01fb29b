//! One identity provider as the relying party talks to it over HTTP: its discovery
//! document and key set, each cached with a TTL (the key set fetched again early
//! when a token names an unknown `kid`, at most once per `jwks_min_refetch`), and
//! the token endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use godel_error::Error;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::config::{ClientAuth, OidcConfig, ProviderConfig};
use super::id_token::{self, IdClaims, IdTokenError, IdTokenRules, ProviderKeys};

/// The parts of the discovery document sign-in uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

/// The token endpoint's answer (RFC 6749 §5.1 plus `id_token`).
#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// What the token endpoint gave for a code.
pub(crate) struct Tokens {
    pub id_token: String,
    /// For the userinfo endpoint.
    pub access_token: Option<String>,
}

/// A cached value and when it was fetched.
struct Cached<T> {
    value: T,
    fetched: Instant,
}

/// A provider: its settings and what was fetched from it.
pub(crate) struct Provider {
    pub config: ProviderConfig,
    http: reqwest::Client,
    discovery_ttl: Duration,
    jwks_ttl: Duration,
    jwks_min_refetch: Duration,
    discovery: Mutex<Option<Cached<Arc<Discovery>>>>,
    keys: Mutex<Option<Cached<ProviderKeys>>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.config.name)
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// A provider could not be reached or answered nonsense: `unavailable`, with the
/// cause logged here.
fn provider_failed(provider: &str, what: &'static str, cause: impl std::fmt::Display) -> Error {
    tracing::warn!(provider, error = %cause, "{what} failed");
    Error::unavailable(format!("identity provider `{provider}`: {what} failed"))
}

impl Provider {
    pub fn new(config: ProviderConfig, settings: &OidcConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            discovery_ttl: settings.discovery_ttl,
            jwks_ttl: settings.jwks_ttl,
            jwks_min_refetch: settings.jwks_min_refetch,
            discovery: Mutex::new(None),
            keys: Mutex::new(None),
        }
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    async fn get_json(&self, url: &str, what: &'static str) -> Result<serde_json::Value, Error> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| provider_failed(self.name(), what, e))?;
        if !response.status().is_success() {
            return Err(provider_failed(
                self.name(),
                what,
                format!("HTTP {}", response.status()),
            ));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| provider_failed(self.name(), what, e))?;
        serde_json::from_slice(&bytes).map_err(|e| provider_failed(self.name(), what, e))
    }

    /// The discovery document, fetched when missing or older than the TTL. Its
    /// `issuer` must be the configured one exactly (OIDC Discovery §4.3).
    pub async fn discovery(&self) -> Result<Arc<Discovery>, Error> {
        let mut cached = self.discovery.lock().await;
        if let Some(c) = cached.as_ref()
            && c.fetched.elapsed() < self.discovery_ttl
        {
            return Ok(c.value.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let json = self.get_json(&url, "discovery").await?;
        let doc: Discovery = serde_json::from_value(json)
            .map_err(|e| provider_failed(self.name(), "discovery", e))?;
        if doc.issuer != self.config.issuer {
            return Err(provider_failed(
                self.name(),
                "discovery",
                format!("the document names issuer `{}`", doc.issuer),
            ));
        }
        if !doc.code_challenge_methods_supported.is_empty()
            && !doc
                .code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256")
        {
            return Err(provider_failed(
                self.name(),
                "discovery",
                "the provider does not support PKCE S256",
            ));
        }
        let doc = Arc::new(doc);
        *cached = Some(Cached {
            value: doc.clone(),
            fetched: Instant::now(),
        });
        Ok(doc)
    }

    /// The key set: cached, or fetched when missing, older than the TTL, or when
    /// `refetch` asks for it (an unknown `kid`) and the last fetch is older than
    /// the minimum refetch interval. When a fetch fails, the cached set is used.
    async fn keys(&self, refetch: bool) -> Result<ProviderKeys, Error> {
        let mut cached = self.keys.lock().await;
        if let Some(c) = cached.as_ref()
            && !must_fetch(
                c.fetched.elapsed(),
                self.jwks_ttl,
                self.jwks_min_refetch,
                refetch,
            )
        {
            return Ok(c.value.clone());
        }
        let fetched = async {
            let jwks_uri = self.discovery().await?.jwks_uri.clone();
            let json = self.get_json(&jwks_uri, "fetching the key set").await?;
            ProviderKeys::from_jwks(&json)
                .map_err(|e| provider_failed(self.name(), "fetching the key set", e))
        }
        .await;
        match (fetched, cached.as_ref()) {
            (Ok(keys), _) => {
                *cached = Some(Cached {
                    value: keys.clone(),
                    fetched: Instant::now(),
                });
                Ok(keys)
            }
            // The provider is unreachable: the keys it published last still verify
            // (the failure is logged by `provider_failed`).
            (Err(_), Some(c)) => Ok(c.value.clone()),
            (Err(e), None) => Err(e),
        }
    }

    /// Verifies an ID token from this provider (see [`id_token::verify`]); an
    /// unknown `kid` refetches the key set once (rate limited) and tries again.
    pub async fn verify_id_token(
        &self,
        token: &str,
        nonce_sha256: String,
    ) -> Result<IdClaims, Error> {
        let rules = IdTokenRules {
            issuer: self.config.issuer.clone(),
            client_id: self.config.client_id.clone(),
            algorithms: self
                .config
                .algorithms
                .iter()
                .filter_map(|a| id_token::allowed_algorithm(a).ok())
                .collect(),
            leeway: self.config.leeway,
            nonce_sha256,
        };
        let keys = self.keys(false).await?;
        let outcome = match id_token::verify(token, &keys, &rules) {
            Err(IdTokenError::UnknownKeyId(_)) => {
                let keys = self.keys(true).await?;
                id_token::verify(token, &keys, &rules)
            }
            other => other,
        };
        outcome.map_err(|e| {
            tracing::warn!(provider = self.name(), error = %e, "an ID token was refused");
            Error::unauthenticated(format!("invalid ID token: {e}"))
        })
    }

    /// Trades an authorization code for tokens at the token endpoint, with the PKCE
    /// verifier and the client authentication configured; returns the ID token.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<Tokens, Error> {
        let discovery = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        let mut request = self.http.post(&discovery.token_endpoint);
        let secret = self
            .config
            .client_secret
            .as_ref()
            .map(|s| s.expose().as_str());
        match (self.config.client_auth(), secret) {
            (ClientAuth::ClientSecretBasic, Some(secret)) => {
                // RFC 6749 §2.3.1: form-urlencode both parts before Basic.
                request = request.basic_auth(
                    form_encode(&self.config.client_id),
                    Some(form_encode(secret)),
                );
            }
            (ClientAuth::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret));
            }
            _ => form.push(("client_id", &self.config.client_id)),
        }
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| provider_failed(self.name(), "the token exchange", e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| provider_failed(self.name(), "the token exchange", e))?;
        if status.is_client_error() {
            // invalid_grant and friends: the code is bad, used or not ours.
            let error = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}"));
            tracing::warn!(provider = self.name(), %error, "the token endpoint refused the code");
            return Err(Error::unauthenticated(format!(
                "the identity provider refused the authorization code ({error})"
            )));
        }
        if !status.is_success() {
            return Err(provider_failed(
                self.name(),
                "the token exchange",
                format!("HTTP {status}"),
            ));
        }
        let tokens: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| provider_failed(self.name(), "the token exchange", e))?;
        let id_token = tokens.id_token.ok_or_else(|| {
            provider_failed(
                self.name(),
                "the token exchange",
                "no id_token in the answer",
            )
        })?;
        Ok(Tokens {
            id_token,
            access_token: tokens.access_token,
        })
    }

    /// Fills the claims the ID token left out (many providers put only `sub` there
    /// and the profile, email and groups at the userinfo endpoint) from the
    /// userinfo endpoint, when the provider has one. Its `sub` must be the ID
    /// token's (OIDC Core §5.3.2); claims the ID token has are kept.
    pub async fn complete_claims(
        &self,
        claims: &mut IdClaims,
        access_token: Option<&str>,
    ) -> Result<(), Error> {
        let complete = claims.email.is_some()
            && claims.name.is_some()
            && claims.other.contains_key(&self.config.groups_claim);
        let (Some(access_token), false) = (access_token, complete) else {
            return Ok(());
        };
        let Some(endpoint) = self.discovery().await?.userinfo_endpoint.clone() else {
            return Ok(());
        };
        let response = self
            .http
            .get(&endpoint)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| provider_failed(self.name(), "reading userinfo", e))?;
        if !response.status().is_success() {
            return Err(provider_failed(
                self.name(),
                "reading userinfo",
                format!("HTTP {}", response.status()),
            ));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| provider_failed(self.name(), "reading userinfo", e))?;
        let info: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
            .map_err(|e| provider_failed(self.name(), "reading userinfo", e))?;
        if info.get("sub").and_then(|s| s.as_str()) != Some(claims.sub.as_str()) {
            tracing::warn!(provider = self.name(), "userinfo names another subject");
            return Err(Error::unauthenticated(
                "sign-in refused: the userinfo answer names another subject",
            ));
        }
        claims.fill_from(info);
        Ok(())
    }
}

/// Whether a key set fetched `age` ago must be fetched again: when older than
/// `ttl`, or when a token named an unknown `kid` (`unknown_kid`) and the last fetch
/// is at least `min_refetch` old — so forged `kid`s cannot make the service hammer
/// the provider.
fn must_fetch(age: Duration, ttl: Duration, min_refetch: Duration, unknown_kid: bool) -> bool {
    age >= ttl || (unknown_kid && age >= min_refetch)
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_set_is_refetched_when_stale_or_for_an_unknown_kid_at_most_so_often() {
        let (ttl, min) = (Duration::from_secs(3600), Duration::from_secs(30));
        assert!(!must_fetch(Duration::from_secs(10), ttl, min, false));
        assert!(
            !must_fetch(Duration::from_secs(10), ttl, min, true),
            "rate limited"
        );
        assert!(must_fetch(Duration::from_secs(31), ttl, min, true));
        assert!(!must_fetch(Duration::from_secs(31), ttl, min, false));
        assert!(must_fetch(Duration::from_secs(3600), ttl, min, false));
    }

    #[test]
    fn encodings() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
