//! Authentication of every `/v1` request.
//!
//! `Authorization: Bearer <jwt>` is a Godel access token, verified locally against the
//! auth service's cached key set. `Authorization: Bearer gdl_…` is an API key: it is
//! exchanged with auth's `Authenticate` for a short-lived access token, which is
//! cached under the SHA-256 of the key for `api.api_key_cache_ttl` (never past the
//! token's expiry). A revoked key therefore keeps working on a gateway replica for at
//! most that long. Either way the request goes on with the verified [`Caller`] and the
//! access token to forward to the internal services.
//!
//! Without an `Authorization` header, a browser's session cookie (see
//! [`crate::login`]) stands for the session's access token, renewed when it is about
//! to expire. A cookie travels with every request the browser makes, including those
//! another site triggers, so a cookie-authenticated request with an unsafe method
//! (anything but GET, HEAD, OPTIONS) must also carry the session's CSRF token in
//! `X-CSRF-Token` (the value of the `godel_csrf` cookie, which only pages of this
//! origin can read), else 403. Bearer tokens and API keys need no such token: a
//! browser never adds them by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use godel_error::Error;
use godel_identity::{Caller, CallerVerifier};
use godel_proto::auth::v1::AuthenticateRequest;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::auth::v1::authenticate_request::Credential;
use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::login::cookie;
use crate::login::session::Sessions;

/// How API key secrets begin (auth's `CreateApiKey`).
const API_KEY_PREFIX: &str = "gdl_";

/// A caller whose credential was checked, and the access token standing for it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    /// The Godel access token forwarded to the services (`attach_token`).
    pub token: String,
}

struct CachedKey {
    authenticated: Authenticated,
    until: Instant,
}

/// Turns the `Authorization` header into an [`Authenticated`] caller.
pub(crate) struct Authenticator {
    verifier: CallerVerifier,
    auth: AuthServiceClient<Channel>,
    ttl: Duration,
    max_entries: usize,
    keys: Mutex<HashMap<[u8; 32], CachedKey>>,
    sessions: Option<Sessions>,
}

impl Authenticator {
    pub(crate) fn new(
        verifier: CallerVerifier,
        auth: AuthServiceClient<Channel>,
        ttl: Duration,
        max_entries: usize,
    ) -> Self {
        Self {
            verifier,
            auth,
            ttl,
            max_entries: max_entries.max(1),
            keys: Mutex::new(HashMap::new()),
            sessions: None,
        }
    }

    /// Also accepts browser sessions (when sign-in is configured).
    pub(crate) fn with_sessions(mut self, sessions: Option<Sessions>) -> Self {
        self.sessions = sessions;
        self
    }

    /// The caller of a request, from its `Authorization` header, else its session
    /// cookie.
    pub(crate) async fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Authenticated, Error> {
        if !headers.contains_key(http::header::AUTHORIZATION)
            && let Some(sessions) = &self.sessions
            && let Some(id) = cookie::read(headers, cookie::SESSION)
        {
            return self.session(sessions, id, method, headers).await;
        }
        let credential = bearer(headers)?;
        if credential.starts_with(API_KEY_PREFIX) {
            return self.api_key(credential).await;
        }
        let caller = self.verifier.verify(credential).await?;
        Ok(Authenticated {
            caller,
            token: credential.to_owned(),
        })
    }

    /// The caller of a browser session.
    async fn session(
        &self,
        sessions: &Sessions,
        id: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Authenticated, Error> {
        let record = sessions.load(id).await?;
        if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            record.check_csrf(
                headers
                    .get(cookie::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok()),
            )?;
        }
        let record = sessions.fresh(id, record).await?;
        let caller = self.verifier.verify(&record.access_token).await?;
        Ok(Authenticated {
            caller,
            token: record.access_token,
        })
    }

    /// The caller an API key stands for: from the cache, or exchanged with auth.
    pub(crate) async fn api_key(&self, secret: &str) -> Result<Authenticated, Error> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some(hit) = self.cached(&digest) {
            metrics::counter!("godel_gateway_api_key_cache_total", "result" => "hit").increment(1);
            return Ok(hit);
        }
        metrics::counter!("godel_gateway_api_key_cache_total", "result" => "miss").increment(1);
        let response = self
            .auth
            .clone()
            .authenticate(AuthenticateRequest {
                credential: Some(Credential::ApiKey(secret.to_owned())),
                team_id: String::new(),
            })
            .await
            .map_err(|status| {
                let error = Error::from_status(&status);
                match error.code {
                    godel_error::ErrorCode::Unauthenticated
                    | godel_error::ErrorCode::PermissionDenied
                    | godel_error::ErrorCode::NotFound => {
                        Error::unauthenticated("invalid API key: unknown, expired or revoked")
                    }
                    _ => error,
                }
            })?
            .into_inner();
        let caller = self.verifier.verify(&response.access_token).await?;
        let authenticated = Authenticated {
            caller,
            token: response.access_token,
        };
        self.remember(digest, &authenticated);
        Ok(authenticated)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Authenticated> {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.get(digest)
            .filter(|entry| entry.until > Instant::now())
            .map(|entry| entry.authenticated.clone())
    }

    fn remember(&self, digest: [u8; 32], authenticated: &Authenticated) {
        let left = (authenticated.caller.expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        let until = Instant::now() + self.ttl.min(left);
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys.len() >= self.max_entries {
            let now = Instant::now();
            keys.retain(|_, entry| entry.until > now);
            if keys.len() >= self.max_entries {
                keys.clear();
            }
        }
        keys.insert(
            digest,
            CachedKey {
                authenticated: authenticated.clone(),
                until,
            },
        );
    }
}

/// The credential of `Authorization: Bearer <credential>`.
/// Whether the request presents an API key (checking one asks auth).
pub(crate) fn presents_api_key(headers: &HeaderMap) -> bool {
    bearer(headers).is_ok_and(|credential| credential.starts_with(API_KEY_PREFIX))
}

fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(Error::unauthenticated(
            "no credential (send `Authorization: Bearer <access token or API key>`)",
        ));
    };
    let text = value
        .to_str()
        .map_err(|_| Error::unauthenticated("malformed Authorization header"))?;
    let (scheme, credential) = text
        .split_once(' ')
        .ok_or_else(|| Error::unauthenticated("malformed Authorization header"))?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(Error::unauthenticated(
            "the Authorization header must be `Bearer <access token or API key>`",
        ));
    }
    Ok(credential)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_bearer_credentials_are_read() {
        let mut headers = HeaderMap::new();
        assert!(bearer(&headers).is_err());
        for bad in ["Basic abc", "Bearer ", "Bearer", "abc"] {
            headers.insert(http::header::AUTHORIZATION, bad.parse().unwrap());
            assert!(bearer(&headers).is_err(), "{bad}");
        }
        headers.insert(http::header::AUTHORIZATION, "bearer gdl_x".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap(), "gdl_x");
    }
}
