//! Key-encryption keys: what wraps the per-secret data keys. One trait, two
//! backends — [`LocalKek`] (a key file, for `godel up` and single machines) and
//! [`super::VaultTransit`] (HashiCorp Vault's Transit engine, for production).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// Length of a key-encryption key and of a data key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Why a data key could not be wrapped or unwrapped. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("cannot read the key-encryption key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the key-encryption key file {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the key-encryption key file {path} must hold exactly 32 bytes, not {len}")]
    BadLength { path: PathBuf, len: usize },
    #[error("the wrapped data key does not open with this key-encryption key")]
    Unwrap,
    #[error("wrapping a data key failed")]
    Wrap,
    #[error("Vault Transit at {address} cannot be reached")]
    VaultUnreachable {
        address: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Vault Transit answered {status}: {message}")]
    Vault { status: u16, message: String },
}

/// Wraps and unwraps data keys. `aad` is bound to the wrapped key: unwrapping with
/// any other `aad` fails.
#[async_trait::async_trait]
pub trait Kek: Send + Sync + fmt::Debug {
    /// Names the key-encryption key (stored beside every key it wrapped, so a
    /// changed backend or key is reported instead of failing obscurely).
    async fn id(&self) -> Result<String, KekError>;
    async fn wrap(&self, data_key: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError>;
    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError>;
}

/// Seals `plaintext` with XChaCha20-Poly1305 under `key`: `nonce (24) ‖ ciphertext`.
pub(crate) fn aead_seal(key: &[u8], plaintext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let key: &[u8; KEY_LEN] = key.try_into().ok()?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .ok()?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Some(out)
}

/// Opens what [`aead_seal`] sealed; `None` when the key, `aad` or bytes differ.
pub(crate) fn aead_open(key: &[u8], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let key: &[u8; KEY_LEN] = key.try_into().ok()?;
    if sealed.len() <= NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

/// A 32-byte key-encryption key in a file, read on first use. With
/// `create_if_missing`, a missing file is created with a random key and mode 0600.
pub struct LocalKek {
    path: PathBuf,
    create_if_missing: bool,
    key: OnceCell<LoadedKey>,
}

struct LoadedKey {
    key: [u8; KEY_LEN],
    id: String,
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalKek {
    pub fn new(path: impl Into<PathBuf>, create_if_missing: bool) -> Self {
        Self {
            path: path.into(),
            create_if_missing,
            key: OnceCell::new(),
        }
    }

    async fn loaded(&self) -> Result<&LoadedKey, KekError> {
        self.key
            .get_or_try_init(|| {
                let path = self.path.clone();
                let create = self.create_if_missing;
                async move {
                    tokio::task::spawn_blocking(move || load_or_create(&path, create))
                        .await
                        .map_err(|_| KekError::Wrap)?
                }
            })
            .await
    }
}

fn load_or_create(path: &Path, create: bool) -> Result<LoadedKey, KekError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
            create_key_file(path)?
        }
        Err(source) => {
            return Err(KekError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let key: [u8; KEY_LEN] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KekError::BadLength {
            path: path.to_owned(),
            len: bytes.len(),
        })?;
    // The id names the key without revealing it: a fingerprint, not the key.
    let fingerprint = Sha256::digest([b"godel-kek-id\0".as_slice(), &key].concat());
    Ok(LoadedKey {
        key,
        id: format!("local:{}", hex::encode(&fingerprint[..8])),
    })
}

/// Writes a fresh random key to `path` (mode 0600, never overwriting a file that
/// appeared meanwhile) and returns it.
fn create_key_file(path: &Path) -> Result<Vec<u8>, KekError> {
    let err = |source| KekError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut key = vec![0u8; KEY_LEN];
    rand::rng().fill_bytes(&mut key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(&key).map_err(err)?;
    file.sync_all().map_err(err)?;
    tracing::info!(path = %path.display(), "created a new key-encryption key file");
    Ok(key)
}

#[async_trait::async_trait]
impl Kek for LocalKek {
    async fn id(&self) -> Result<String, KekError> {
        Ok(self.loaded().await?.id.clone())
    }

    async fn wrap(&self, data_key: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let kek = self.loaded().await?;
        aead_seal(&kek.key, data_key, aad).ok_or(KekError::Wrap)
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let kek = self.loaded().await?;
        aead_open(&kek.key, wrapped, aad).ok_or(KekError::Unwrap)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn a_created_key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kek");
        let kek = LocalKek::new(&path, true);
        let wrapped = kek.wrap(&[7u8; 32], b"aad").await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_LEN);
        // A second instance reads the same file and opens what the first wrapped.
        let again = LocalKek::new(&path, true);
        assert_eq!(again.id().await.unwrap(), kek.id().await.unwrap());
        assert_eq!(again.unwrap(&wrapped, b"aad").await.unwrap(), [7u8; 32]);
        assert!(matches!(
            again.unwrap(&wrapped, b"other").await,
            Err(KekError::Unwrap)
        ));
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_unless_asked_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let kek = LocalKek::new(dir.path().join("kek"), false);
        assert!(matches!(kek.id().await, Err(KekError::Read { .. })));
        std::fs::write(dir.path().join("short"), b"abc").unwrap();
        let short = LocalKek::new(dir.path().join("short"), true);
        assert!(matches!(
            short.id().await,
            Err(KekError::BadLength { len: 3, .. })
        ));
    }
}
