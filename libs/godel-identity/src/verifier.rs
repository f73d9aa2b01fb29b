//! [`CallerVerifier`]: turns the access token a request carries into a [`Caller`],
//! with the auth service's key set cached.
//!
//! The key set comes from a [`KeySource`]: the auth service's `GetJwks` RPC
//! ([`AuthKeySource`]), or anything that hands over a [`Jwks`] (in-process: the key
//! set itself). It is fetched on first use and again when older than
//! `jwks_max_age`, and a token naming a `kid` not in the cache triggers a refetch at
//! most once per `jwks_min_refetch` (so a stream of made-up `kid`s cannot hammer
//! auth). Refetches are single-flight. When auth cannot be reached the cached keys
//! keep verifying; with no keys at all, verification fails `unavailable`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use godel_proto::auth::v1 as pb;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::caller::Caller;
use crate::jwks::{Jwk, Jwks, PublicKey};
use crate::token::{TokenRules, VerifyError, key_id, verify_with_key};

/// How tokens are checked and how the key set is cached. Embed it in a service's
/// configuration; `issuer`, `audience` and `leeway` must match auth's `tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifierConfig {
    /// The expected `iss` (auth's `tokens.issuer`).
    pub issuer: String,
    /// The expected `aud` (auth's `tokens.audience`).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "godel_config::duration")]
    pub leeway: Duration,
    /// Fewest time between two fetches caused by an unknown `kid`.
    #[serde(with = "godel_config::duration")]
    pub jwks_min_refetch: Duration,
    /// A cached key set older than this is fetched again before use.
    #[serde(with = "godel_config::duration")]
    pub jwks_max_age: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            issuer: "godel".to_owned(),
            audience: "godel-api".to_owned(),
            leeway: Duration::from_secs(30),
            jwks_min_refetch: Duration::from_secs(5),
            jwks_max_age: Duration::from_secs(300),
        }
    }
}

impl VerifierConfig {
    fn rules(&self) -> TokenRules {
        TokenRules {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway: self.leeway,
        }
    }
}

/// How a service verifies its callers: where the auth service is (for its key set)
/// and the token rules. Embed it in a service's configuration as `identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// The auth service's gRPC endpoint (`http://godel-auth:9090`).
    pub auth_url: String,
    /// How tokens are checked; must match auth's `tokens` settings.
    pub tokens: VerifierConfig,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            auth_url: "http://127.0.0.1:9090".to_owned(),
            tokens: VerifierConfig::default(),
        }
    }
}

impl IdentityConfig {
    /// A verifier fetching keys from the configured auth service (connecting on
    /// first use, so a service can start before auth).
    pub fn verifier(&self) -> Result<CallerVerifier, KeySourceError> {
        let source = AuthKeySource::connect_lazy(&self.auth_url)?;
        Ok(CallerVerifier::new(self.tokens.clone(), Arc::new(source)))
    }
}

/// Why a key set could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    #[error("the auth service answered GetJwks with an error")]
    Rpc(#[from] tonic::Status),
    #[error("invalid auth service URL `{url}`")]
    Url {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("reading the key set failed: {0}")]
    Other(String),
}

/// Where the key set comes from.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn fetch(&self) -> Result<Jwks, KeySourceError>;
}

/// A fixed key set (in-process use and tests).
#[async_trait::async_trait]
impl KeySource for Jwks {
    async fn fetch(&self) -> Result<Jwks, KeySourceError> {
        Ok(self.clone())
    }
}

/// The auth service's `GetJwks` RPC.
#[derive(Debug, Clone)]
pub struct AuthKeySource {
    client: AuthServiceClient<Channel>,
}

impl AuthKeySource {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: AuthServiceClient::new(channel),
        }
    }

    /// A source for the auth service at `url` (`http://godel-auth:9090`), connecting
    /// on first use.
    pub fn connect_lazy(url: &str) -> Result<Self, KeySourceError> {
        let endpoint = Channel::from_shared(url.to_owned()).map_err(|e| KeySourceError::Url {
            url: url.to_owned(),
            source: e,
        })?;
        Ok(Self::new(endpoint.connect_lazy()))
    }
}

#[async_trait::async_trait]
impl KeySource for AuthKeySource {
    async fn fetch(&self) -> Result<Jwks, KeySourceError> {
        let response = self
            .client
            .clone()
            .get_jwks(pb::GetJwksRequest {})
            .await?
            .into_inner();
        Ok(Jwks {
            keys: response.keys.into_iter().map(jwk_from_pb).collect(),
        })
    }
}

/// A proto JWK as a [`Jwk`].
pub fn jwk_from_pb(k: pb::Jwk) -> Jwk {
    Jwk {
        kty: k.kty,
        crv: k.crv,
        x: k.x,
        kid: k.kid,
        alg: k.alg,
        use_: k.key_use,
    }
}

/// A [`Jwk`] as a proto JWK.
pub fn jwk_to_pb(k: Jwk) -> pb::Jwk {
    pb::Jwk {
        kty: k.kty,
        crv: k.crv,
        x: k.x,
        kid: k.kid,
        alg: k.alg,
        key_use: k.use_,
    }
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, PublicKey>,
    /// When the cached set was fetched (`None`: never).
    fetched_at: Option<Instant>,
    /// When a fetch was last tried, successful or not.
    tried_at: Option<Instant>,
}

impl KeyCache {
    fn fresh(&self, max_age: Duration) -> bool {
        self.fetched_at.is_some_and(|at| at.elapsed() < max_age)
    }

    fn may_refetch(&self, min_interval: Duration) -> bool {
        self.tried_at.is_none_or(|at| at.elapsed() >= min_interval)
    }
}

struct Inner {
    config: VerifierConfig,
    rules: TokenRules,
    source: Arc<dyn KeySource>,
    cache: RwLock<KeyCache>,
    /// Held while fetching, so concurrent misses fetch once.
    fetching: tokio::sync::Mutex<()>,
}

/// Verifies Godel access tokens and yields the [`Caller`]. Cheap to clone; share one
/// per process.
#[derive(Clone)]
pub struct CallerVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CallerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerVerifier")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl CallerVerifier {
    pub fn new(config: VerifierConfig, source: Arc<dyn KeySource>) -> Self {
        Self {
            inner: Arc::new(Inner {
                rules: config.rules(),
                config,
                source,
                cache: RwLock::new(KeyCache::default()),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A verifier that asks the auth service at `url` for its keys.
    pub fn for_auth_service(config: VerifierConfig, url: &str) -> Result<Self, KeySourceError> {
        Ok(Self::new(
            config,
            Arc::new(AuthKeySource::connect_lazy(url)?),
        ))
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.inner.config
    }

    /// Verifies `token` (without `Bearer `) and returns who it stands for.
    pub async fn verify(&self, token: &str) -> Result<Caller, VerifyError> {
        let kid = key_id(token)?;
        let key = self.key(&kid).await?;
        verify_with_key(token, &key, &self.inner.rules)
    }

    /// The cached key `kid`, fetching the key set when the cache is stale or does
    /// not know `kid` (rate limited).
    async fn key(&self, kid: &str) -> Result<PublicKey, VerifyError> {
        let config = &self.inner.config;
        if let Some(key) = self.cached(kid, true) {
            return Ok(key);
        }
        let _fetching = self.inner.fetching.lock().await;
        // Whoever held the lock before may have fetched what is needed.
        if let Some(key) = self.cached(kid, true) {
            return Ok(key);
        }
        let (may_refetch, has_any) = {
            let cache = self.read_cache();
            (
                cache.may_refetch(config.jwks_min_refetch),
                cache.fetched_at.is_some(),
            )
        };
        // A fresh set without `kid` is refetched only past the rate limit; a stale
        // or missing set is refetched at most as often, too.
        if !may_refetch {
            return match self.cached(kid, false) {
                Some(key) => Ok(key),
                None if has_any => Err(VerifyError::UnknownKeyId(kid.to_owned())),
                None => Err(VerifyError::KeysUnavailable),
            };
        }
        let fetched = self.inner.source.fetch().await;
        let mut cache = self.write_cache();
        cache.tried_at = Some(Instant::now());
        match fetched {
            Ok(jwks) => {
                cache.keys = usable_keys(&jwks);
                cache.fetched_at = Some(Instant::now());
                tracing::debug!(keys = cache.keys.len(), "fetched the token signing keys");
            }
            Err(e) => {
                tracing::warn!(error = %e, "fetching the token signing keys failed; using the cached ones");
                if cache.fetched_at.is_none() {
                    return Err(VerifyError::KeysUnavailable);
                }
            }
        }
        cache
            .keys
            .get(kid)
            .copied()
            .ok_or_else(|| VerifyError::UnknownKeyId(kid.to_owned()))
    }

    fn cached(&self, kid: &str, only_fresh: bool) -> Option<PublicKey> {
        let cache = self.read_cache();
        if only_fresh && !cache.fresh(self.inner.config.jwks_max_age) {
            return None;
        }
        cache.keys.get(kid).copied()
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, KeyCache> {
        self.inner
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, KeyCache> {
        self.inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The keys of `jwks` that verify Godel tokens, by `kid`; others are logged and
/// left out.
fn usable_keys(jwks: &Jwks) -> HashMap<String, PublicKey> {
    jwks.keys
        .iter()
        .filter_map(|jwk| match PublicKey::from_jwk(jwk) {
            Ok(key) => Some((jwk.kid.clone(), key)),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a key of the key set");
                None
            }
        })
        .collect()
}
