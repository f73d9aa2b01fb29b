//! Sealing signing keys at rest. With `tokens.signing_key_encryption_key` set (32
//! bytes, base64), each private key is stored encrypted with XChaCha20-Poly1305
//! under that key, with the key's `kid` as associated data (a sealed key copied to
//! another row does not open). Without it, keys are stored as plain 32-byte seeds
//! (the `godel up` shape, where the key file would sit next to the database anyway).
//!
//! Stored form: 32 bytes = a plain seed; `0x01 ‖ nonce (24) ‖ ciphertext (48)` = sealed.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;

const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const SEED_LEN: usize = 32;

/// Why a key-encryption key or a stored key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the signing-key encryption key must be 32 bytes, base64-encoded: {0}")]
    BadKey(String),
    #[error("signing key {kid} is sealed, but no signing-key encryption key is configured")]
    NoKey { kid: String },
    #[error("signing key {kid} does not open with the configured encryption key")]
    Open { kid: String },
    #[error("signing key {kid} is stored in an unknown form ({len} bytes)")]
    Unknown { kid: String, len: usize },
    #[error("sealing signing key {kid} failed")]
    Seal { kid: String },
}

/// Decodes the configured key-encryption key.
pub(crate) fn parse_key(text: &str) -> Result<[u8; 32], SealError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| SealError::BadKey(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| SealError::BadKey(format!("got {} bytes", b.len())))
}

/// The stored form of `seed`: sealed under `kek` when one is given.
pub(crate) fn seal(
    seed: &[u8; SEED_LEN],
    kid: &str,
    kek: Option<&[u8; 32]>,
) -> Result<Vec<u8>, SealError> {
    let Some(kek) = kek else {
        return Ok(seed.to_vec());
    };
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(kek));
    let payload = Payload {
        msg: seed,
        aad: kid.as_bytes(),
    };
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), payload)
        .map_err(|_| SealError::Seal {
            kid: kid.to_owned(),
        })?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(SEALED_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The seed from its stored form.
pub(crate) fn open(
    stored: &[u8],
    kid: &str,
    kek: Option<&[u8; 32]>,
) -> Result<[u8; SEED_LEN], SealError> {
    if let Ok(seed) = <[u8; SEED_LEN]>::try_from(stored) {
        return Ok(seed);
    }
    let unknown = || SealError::Unknown {
        kid: kid.to_owned(),
        len: stored.len(),
    };
    let (&version, rest) = stored.split_first().ok_or_else(unknown)?;
    if version != SEALED_V1 || rest.len() <= NONCE_LEN {
        return Err(unknown());
    }
    let kek = kek.ok_or_else(|| SealError::NoKey {
        kid: kid.to_owned(),
    })?;
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(kek));
    let seed = cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: kid.as_bytes(),
            },
        )
        .map_err(|_| SealError::Open {
            kid: kid.to_owned(),
        })?;
    seed.try_into().map_err(|_| unknown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_seeds_open_only_with_their_key_and_kid() {
        let seed = [9u8; 32];
        let kek = [1u8; 32];
        let sealed = seal(&seed, "gdk_a", Some(&kek)).unwrap();
        assert_eq!(sealed.len(), 1 + 24 + 32 + 16);
        assert!(!sealed.windows(32).any(|w| w == seed), "seed visible");
        assert_eq!(open(&sealed, "gdk_a", Some(&kek)).unwrap(), seed);
        assert!(matches!(
            open(&sealed, "gdk_b", Some(&kek)),
            Err(SealError::Open { .. })
        ));
        assert!(matches!(
            open(&sealed, "gdk_a", Some(&[2u8; 32])),
            Err(SealError::Open { .. })
        ));
        assert!(matches!(
            open(&sealed, "gdk_a", None),
            Err(SealError::NoKey { .. })
        ));
        assert!(matches!(
            open(&[1, 2, 3], "gdk_a", None),
            Err(SealError::Unknown { len: 3, .. })
        ));
        // Two seals of one seed differ (fresh nonce).
        assert_ne!(sealed, seal(&seed, "gdk_a", Some(&kek)).unwrap());
    }

    #[test]
    fn without_a_key_seeds_are_stored_plain() {
        let seed = [7u8; 32];
        assert_eq!(seal(&seed, "k", None).unwrap(), seed.to_vec());
        assert_eq!(open(&seed, "k", None).unwrap(), seed);
        // A plain seed still opens once a key is configured.
        assert_eq!(open(&seed, "k", Some(&[1u8; 32])).unwrap(), seed);
    }

    #[test]
    fn key_encryption_keys_must_be_32_bytes_of_base64() {
        let good = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        assert_eq!(parse_key(&good).unwrap(), [5u8; 32]);
        assert!(parse_key("c2hvcnQ=").is_err());
        assert!(parse_key("not base64!").is_err());
    }
}
