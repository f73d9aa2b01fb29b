//! The JSON Web Key Set (RFC 7517) of the Ed25519 keys (RFC 8037) that verify Godel
//! access tokens: the auth service publishes it, verifiers read it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::token::ALGORITHM;

/// A key set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// An Ed25519 public key as a JWK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `OKP`
    pub kty: String,
    /// `Ed25519`
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    pub kid: String,
    /// `EdDSA`
    pub alg: String,
    /// `sig`
    #[serde(rename = "use")]
    pub use_: String,
}

impl Jwk {
    /// The JWK of the Ed25519 public key `public`, named `kid`.
    pub fn ed25519(kid: impl Into<String>, public: &[u8; 32]) -> Self {
        Self {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: URL_SAFE_NO_PAD.encode(public),
            kid: kid.into(),
            alg: ALGORITHM.to_owned(),
            use_: "sig".to_owned(),
        }
    }
}

/// Why a JWK is not a usable Godel verification key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "key `{kid}` is not an Ed25519 signing key (kty `{kty}`, crv `{crv}`, alg `{alg}`, use `{use_}`)"
    )]
    NotEd25519 {
        kid: String,
        kty: String,
        crv: String,
        alg: String,
        use_: String,
    },
    #[error("key `{kid}` has no valid 32-byte public key in `x`")]
    BadPublicKey { kid: String },
}

/// An Ed25519 public key that verifies tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads an Ed25519 signing key; anything else (another key type, curve or
    /// algorithm, an encryption key) is refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let ed25519 = jwk.kty == "OKP"
            && jwk.crv == "Ed25519"
            && (jwk.alg.is_empty() || jwk.alg == ALGORITHM)
            && (jwk.use_.is_empty() || jwk.use_ == "sig");
        if !ed25519 {
            return Err(KeyError::NotEd25519 {
                kid: jwk.kid.clone(),
                kty: jwk.kty.clone(),
                crv: jwk.crv.clone(),
                alg: jwk.alg.clone(),
                use_: jwk.use_.clone(),
            });
        }
        let bad = || KeyError::BadPublicKey {
            kid: jwk.kid.clone(),
        };
        let bytes: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&jwk.x)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwk_round_trips_and_other_key_types_are_refused() {
        let public = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
            .verifying_key()
            .to_bytes();
        let jwk = Jwk::ed25519("gdk_1", &public);
        let json = serde_json::to_value(&jwk).unwrap();
        assert_eq!(json["use"], "sig");
        assert_eq!(json["kty"], "OKP");
        assert_eq!(PublicKey::from_jwk(&jwk).unwrap().as_bytes(), &public);

        let rsa = Jwk {
            kty: "RSA".into(),
            ..jwk.clone()
        };
        assert!(matches!(
            PublicKey::from_jwk(&rsa),
            Err(KeyError::NotEd25519 { .. })
        ));
        let hs = Jwk {
            alg: "HS256".into(),
            ..jwk.clone()
        };
        assert!(PublicKey::from_jwk(&hs).is_err());
        let short = Jwk {
            x: "AAAA".into(),
            ..jwk
        };
        assert_eq!(
            PublicKey::from_jwk(&short),
            Err(KeyError::BadPublicKey {
                kid: "gdk_1".into()
            })
        );
    }
}
