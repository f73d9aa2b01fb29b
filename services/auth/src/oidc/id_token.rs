//! ID-token verification (OpenID Connect Core §3.1.3.7): the signature against the
//! provider's key set, the algorithm allow-list, `iss`, `aud` and `azp`, `exp`,
//! `iat` and `nbf` with leeway, and `nonce`. Pure: the key set is passed in (see
//! `oidc::provider` for fetching and caching it), so every attack can be tested
//! without a network.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

use crate::refresh::sha256_hex;

/// Checks that `name` may be allowed for ID tokens: a known asymmetric algorithm.
/// `none` (in any case) and the HMAC algorithms are refused: an HMAC "key" from a
/// JWKS is public, so anyone could sign with it.
pub fn allowed_algorithm(name: &str) -> Result<Algorithm, String> {
    let alg: Algorithm = name
        .parse()
        .map_err(|_| format!("unknown ID-token algorithm `{name}`"))?;
    if alg.family() == AlgorithmFamily::Hmac {
        return Err(format!(
            "`{name}` is symmetric; only RS*, PS*, ES* and EdDSA are allowed"
        ));
    }
    Ok(alg)
}

/// One verification key of a provider.
#[derive(Clone)]
struct ProviderKey {
    kid: Option<String>,
    /// The key's `alg`, when the JWKS names one.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

/// A provider's signing keys, parsed from its JWKS. Keys for encryption, symmetric
/// keys and keys this library cannot use are left out.
#[derive(Clone, Default)]
pub struct ProviderKeys {
    keys: Vec<ProviderKey>,
}

impl std::fmt::Debug for ProviderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.kid))
            .finish()
    }
}

impl ProviderKeys {
    /// Parses a JWKS document (`{"keys": [...]}`).
    pub fn from_jwks(document: &serde_json::Value) -> Result<Self, IdTokenError> {
        let Some(items) = document.get("keys").and_then(|k| k.as_array()) else {
            return Err(IdTokenError::BadKeySet);
        };
        let mut keys = Vec::with_capacity(items.len());
        for item in items {
            let text = |name: &str| item.get(name).and_then(|v| v.as_str()).map(str::to_owned);
            if text("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            if key.family() == AlgorithmFamily::Hmac {
                continue;
            }
            keys.push(ProviderKey {
                kid: text("kid"),
                alg: text("alg").and_then(|a| a.parse().ok()),
                family: key.family(),
                key,
            });
        }
        Ok(Self { keys })
    }

    /// How many usable keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token signed with `alg` naming `kid`. Without a `kid`, the one
    /// key that fits `alg`, if exactly one does.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&ProviderKey> {
        let fits = |k: &&ProviderKey| k.family == alg.family() && k.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(fits)
                .find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut candidates = self.keys.iter().filter(fits);
                let first = candidates.next()?;
                candidates.next().is_none().then_some(first)
            }
        }
    }
}

/// What an ID token must match besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenRules {
    /// The provider's issuer, exactly.
    pub issuer: String,
    /// Our client id: must be in `aud`, and be `azp` when present.
    pub client_id: String,
    /// The algorithms accepted (see [`allowed_algorithm`]).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `iat` and `nbf`.
    pub leeway: Duration,
    /// Hex SHA-256 of the `nonce` sent in the authorization request (only the hash
    /// is stored).
    pub nonce_sha256: String,
}

/// The claims of a verified ID token that sign-in uses; the rest are in `other`
/// (for the groups claim).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl IdClaims {
    /// Takes from `info` (a userinfo answer) the claims these lack; `iss`, `sub`
    /// and claims already present are kept.
    pub fn fill_from(&mut self, info: serde_json::Map<String, serde_json::Value>) {
        for (name, value) in info {
            let text = || value.as_str().map(str::to_owned);
            match name.as_str() {
                "iss" | "sub" => {}
                "email" => self.email = self.email.take().or_else(text),
                "name" => self.name = self.name.take().or_else(text),
                "preferred_username" => {
                    self.preferred_username = self.preferred_username.take().or_else(text);
                }
                _ => {
                    self.other.entry(name).or_insert(value);
                }
            }
        }
    }

    /// The strings in claim `name` (a list, or a single string); empty when absent.
    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.other.get(name) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

/// The registered claims checked here.
#[derive(Deserialize)]
struct Registered {
    iat: Option<i64>,
    #[serde(default)]
    aud: Audience,
    azp: Option<String>,
    nonce: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    Missing,
}

/// Why an ID token was refused. The text is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the provider's key set is malformed")]
    BadKeySet,
    #[error("malformed header")]
    MalformedHeader,
    #[error("algorithm `{0}` not allowed")]
    AlgorithmNotAllowed(String),
    #[error("an access token is not an ID token")]
    NotIdToken,
    #[error("unknown key id")]
    UnknownKeyId(Option<String>),
    #[error("bad signature")]
    BadSignature,
    #[error("malformed")]
    Malformed,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotValidYet,
    #[error("issued in the future")]
    IssuedInTheFuture,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("wrong authorized party")]
    WrongAuthorizedParty,
    #[error("missing `{0}` claim")]
    MissingClaim(&'static str),
    #[error("nonce mismatch")]
    WrongNonce,
}

/// The header fields read before any key is chosen.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
}

fn header(token: &str) -> Result<RawHeader, IdTokenError> {
    let first = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|_| IdTokenError::MalformedHeader)?;
    serde_json::from_slice(&bytes).map_err(|_| IdTokenError::MalformedHeader)
}

/// Verifies `token` against `keys` and `rules` and returns its claims.
pub fn verify(
    token: &str,
    keys: &ProviderKeys,
    rules: &IdTokenRules,
) -> Result<IdClaims, IdTokenError> {
    let header = header(token)?;
    // Compared as text first, so `none`, `None` or `HS256` never reach a library.
    let alg = rules
        .algorithms
        .iter()
        .copied()
        .find(|a| format!("{a:?}") == header.alg)
        .ok_or_else(|| IdTokenError::AlgorithmNotAllowed(header.alg.clone()))?;
    if header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
    }) {
        return Err(IdTokenError::NotIdToken);
    }
    let key = keys
        .find(header.kid.as_deref(), alg)
        .ok_or(IdTokenError::UnknownKeyId(header.kid.clone()))?;
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&rules.issuer]);
    validation.set_audience(&[&rules.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = rules.leeway.as_secs();
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => IdTokenError::Expired,
                ErrorKind::ImmatureSignature => IdTokenError::NotValidYet,
                ErrorKind::InvalidIssuer => IdTokenError::WrongIssuer,
                ErrorKind::InvalidAudience => IdTokenError::WrongAudience,
                ErrorKind::InvalidSignature => IdTokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => {
                    IdTokenError::AlgorithmNotAllowed(header.alg.clone())
                }
                ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
                    "aud" => IdTokenError::MissingClaim("aud"),
                    "iss" => IdTokenError::MissingClaim("iss"),
                    "sub" => IdTokenError::MissingClaim("sub"),
                    _ => IdTokenError::MissingClaim("exp"),
                },
                _ => IdTokenError::Malformed,
            }
        })?;
    let registered: Registered =
        serde_json::from_value(data.claims.clone()).map_err(|_| IdTokenError::Malformed)?;
    let now = chrono::Utc::now().timestamp();
    let leeway = i64::try_from(rules.leeway.as_secs()).unwrap_or(i64::MAX);
    let iat = registered.iat.ok_or(IdTokenError::MissingClaim("iat"))?;
    if iat > now.saturating_add(leeway) {
        return Err(IdTokenError::IssuedInTheFuture);
    }
    let audiences = match registered.aud {
        Audience::One(a) => vec![a],
        Audience::Many(a) => a,
        Audience::Missing => return Err(IdTokenError::MissingClaim("aud")),
    };
    if !audiences.contains(&rules.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    match registered.azp {
        Some(azp) if azp != rules.client_id => return Err(IdTokenError::WrongAuthorizedParty),
        None if audiences.len() > 1 => return Err(IdTokenError::WrongAuthorizedParty),
        _ => {}
    }
    let nonce = registered
        .nonce
        .ok_or(IdTokenError::MissingClaim("nonce"))?;
    if !constant_time_eq(sha256_hex(&nonce).as_bytes(), rules.nonce_sha256.as_bytes()) {
        return Err(IdTokenError::WrongNonce);
    }
    serde_json::from_value(data.claims).map_err(|_| IdTokenError::Malformed)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_are_allowed() {
        for ok in ["RS256", "PS256", "ES256", "EdDSA"] {
            allowed_algorithm(ok).unwrap();
        }
        for bad in ["none", "None", "HS256", "HS512", "rs256", ""] {
            allowed_algorithm(bad).unwrap_err();
        }
    }

    #[test]
    fn symmetric_and_encryption_keys_are_left_out_of_the_key_set() {
        let keys = ProviderKeys::from_jwks(&serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "kid": "e", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([2u8; 32]), "kid": "s"},
            {"kty": "weird"}
        ]}))
        .unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.find(Some("s"), Algorithm::EdDSA).is_some());
        assert!(keys.find(Some("s"), Algorithm::RS256).is_none());
        assert!(keys.find(None, Algorithm::EdDSA).is_some());
        ProviderKeys::from_jwks(&serde_json::json!({"nokeys": []})).unwrap_err();
    }
}
