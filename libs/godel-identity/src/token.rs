//! The Godel access token, both sides of it: the claims, signing (used by the auth
//! service, which holds the keys) and verification against a public key (used by
//! every service through [`CallerVerifier`](crate::CallerVerifier)).
//!
//! A token is a JWT signed with Ed25519 (`alg: EdDSA`), typed `at+jwt` (RFC 9068,
//! so an ID token cannot pass as an access token), naming its key in `kid`.
//! Verification accepts nothing else, and checks `iss`, `aud`, `exp` and `nbf` (with
//! a leeway) and that the subject is the kind of principal the `kind` claim says.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use godel_types::TeamId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::caller::{Caller, Principal, PrincipalKind};
use crate::jwks::PublicKey;
use crate::permission::{OrgRole, Permission, PermissionSet};

/// The JWT `typ` of Godel access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The only signature algorithm Godel signs and accepts.
pub const ALGORITHM: &str = "EdDSA";

/// The claims of a Godel access token: everything a service needs to re-check
/// permissions without asking the auth service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The principal: `usr_…` or `key_…`.
    pub sub: String,
    /// What kind of principal `sub` is.
    pub kind: PrincipalKind,
    /// The team the token acts in (`team_…`), when one was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The permissions held in `team`, by catalog name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perms: Vec<String>,
    /// Roles held across the organisation (`org-admin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub org: Vec<String>,
    /// The sign-in session (refresh-token family) it was issued in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique per token.
    pub jti: String,
}

impl AccessClaims {
    /// Sets `perms` and `org` from typed values.
    #[must_use]
    pub fn with_grants(mut self, permissions: PermissionSet, org_roles: &[OrgRole]) -> Self {
        self.perms = permissions.names().into_iter().map(str::to_owned).collect();
        self.org = org_roles.iter().map(|r| r.name().to_owned()).collect();
        self
    }
}

/// What is checked besides the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// The expected `iss`.
    pub issuer: String,
    /// The expected `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Why a token was not accepted. The `Display` text is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no access token (send `authorization: Bearer <token>`)")]
    Missing,
    #[error("malformed header")]
    MalformedHeader,
    #[error("malformed")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("not an access token")]
    NotAccessToken,
    #[error("no key id")]
    NoKeyId,
    #[error("unknown key id `{0}`")]
    UnknownKeyId(String),
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotValidYet,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("subject is not a {0} id")]
    BadSubject(PrincipalKind),
    #[error("bad `{0}` claim")]
    BadClaim(&'static str),
    /// The key set could not be had (the auth service is unreachable): not the
    /// caller's fault.
    #[error("the signing keys cannot be fetched")]
    KeysUnavailable,
}

impl From<VerifyError> for godel_error::Error {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::KeysUnavailable => {
                godel_error::Error::unavailable("cannot verify access tokens right now")
            }
            e => godel_error::Error::unauthenticated(format!("invalid access token: {e}")),
        }
    }
}

impl From<VerifyError> for tonic::Status {
    fn from(e: VerifyError) -> Self {
        godel_error::Error::from(e).into()
    }
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("encoding signing key `{kid}` failed")]
    Key {
        kid: String,
        #[source]
        source: ed25519_dalek::pkcs8::Error,
    },
    #[error("signing a token with key `{kid}` failed")]
    Sign {
        kid: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// Signs `claims` with the Ed25519 key whose 32-byte seed is `seed`, naming it `kid`.
pub fn sign(kid: &str, seed: &[u8; 32], claims: &AccessClaims) -> Result<String, SignError> {
    let der = SigningKey::from_bytes(seed)
        .to_pkcs8_der()
        .map_err(|source| SignError::Key {
            kid: kid.to_owned(),
            source,
        })?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).map_err(
        |source| SignError::Sign {
            kid: kid.to_owned(),
            source,
        },
    )
}

/// Checks the header (`alg` exactly EdDSA, `typ` at+jwt, a `kid`) and returns the
/// `kid`, before any key is looked up.
pub fn key_id(token: &str) -> Result<String, VerifyError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::MalformedHeader)?;
    if header.alg != Algorithm::EdDSA {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return Err(VerifyError::NotAccessToken);
    }
    header.kid.ok_or(VerifyError::NoKeyId)
}

/// Verifies `token` with `key` (which the caller found by the token's `kid`) and
/// `rules`, and returns the caller it stands for.
pub fn verify_with_key(
    token: &str,
    key: &PublicKey,
    rules: &TokenRules,
) -> Result<Caller, VerifyError> {
    key_id(token)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&rules.issuer]);
    validation.set_audience(&[&rules.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = rules.leeway.as_secs();
    let decoding = DecodingKey::from_ed_der(key.as_bytes());
    let data =
        jsonwebtoken::decode::<AccessClaims>(token, &decoding, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::ImmatureSignature => VerifyError::NotValidYet,
                ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
                ErrorKind::InvalidAudience => VerifyError::WrongAudience,
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::InvalidAlgorithm => VerifyError::AlgorithmNotAllowed,
                _ => VerifyError::Malformed,
            }
        })?;
    caller_from_claims(data.claims)
}

/// The caller verified claims stand for. Permission and role names this build does
/// not know are left out (a newer auth service may grant more than this service
/// checks); everything else must parse.
fn caller_from_claims(claims: AccessClaims) -> Result<Caller, VerifyError> {
    let principal = Principal::parse_as(claims.kind, &claims.sub)
        .ok_or(VerifyError::BadSubject(claims.kind))?;
    let team = claims
        .team
        .map(|t| t.parse::<TeamId>())
        .transpose()
        .map_err(|_| VerifyError::BadClaim("team"))?;
    let mut permissions = PermissionSet::EMPTY;
    for name in &claims.perms {
        match name.parse::<Permission>() {
            Ok(p) => permissions.insert(p),
            Err(_) => tracing::debug!(permission = %name, "ignoring an unknown permission claim"),
        }
    }
    let mut org_roles: Vec<OrgRole> = claims
        .org
        .iter()
        .filter_map(|name| OrgRole::from_name(name))
        .collect();
    org_roles.sort();
    org_roles.dedup();
    let expires_at =
        DateTime::<Utc>::from_timestamp(claims.exp, 0).ok_or(VerifyError::Malformed)?;
    Ok(Caller {
        principal,
        team,
        permissions,
        org_roles,
        session: claims.sid,
        expires_at,
    })
}
