//! Short-lived records kept in the cache (Redis in production) under a bearer secret
//! the client holds: a sign-in's `state`, a CLI's one-time code, a session id.
//!
//! The cache never sees the secret: a record is stored under the SHA-256 of it and
//! sealed (XChaCha20-Poly1305, the storage key as associated data) with a key derived
//! from it, so a copy of the cache reveals no tokens and cannot be replayed into
//! another key. The secrets are 256-bit random values, which is what makes a plain
//! hash a sound key derivation here.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use godel_cache::Cache;
use godel_error::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// A new 256-bit secret, base64url without padding (43 characters).
pub(crate) fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Constant-time equality of two strings.
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Records of one kind (`purpose`) in the cache.
#[derive(Clone)]
pub(crate) struct Sealed {
    cache: Arc<dyn Cache>,
    purpose: &'static str,
}

const NONCE_LEN: usize = 24;

impl Sealed {
    pub(crate) fn new(cache: Arc<dyn Cache>, purpose: &'static str) -> Self {
        Self { cache, purpose }
    }

    fn digest(&self, label: &str, secret: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in ["godel-gateway", self.purpose, label, secret] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.finalize().into()
    }

    /// Where the record of `secret` is kept.
    pub(crate) fn key(&self, secret: &str) -> String {
        format!(
            "gateway:{}:{}",
            self.purpose,
            hex::encode(self.digest("id", secret))
        )
    }

    fn cipher(&self, secret: &str) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.digest("key", secret).into())
    }

    /// Stores `value` under `secret` for `ttl`, replacing what was there.
    pub(crate) async fn put<T: Serialize>(
        &self,
        secret: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), Error> {
        let key = self.key(secret);
        let plain = serde_json::to_vec(value).map_err(|e| {
            Error::internal(format!("cannot encode a {} record: {e}", self.purpose))
        })?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher(secret)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| Error::internal(format!("cannot seal a {} record", self.purpose)))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        self.cache
            .set(&key, &stored, Some(ttl.max(Duration::from_secs(1))))
            .await
            .map_err(|e| unavailable(self.purpose, &e))
    }

    /// The record of `secret`, if present, unexpired and intact.
    pub(crate) async fn get<T: DeserializeOwned>(&self, secret: &str) -> Result<Option<T>, Error> {
        let key = self.key(secret);
        let Some(stored) = self
            .cache
            .get(&key)
            .await
            .map_err(|e| unavailable(self.purpose, &e))?
        else {
            return Ok(None);
        };
        Ok(self.open(secret, &key, &stored))
    }

    /// The record of `secret`, removed so no one else gets it (single use).
    pub(crate) async fn take<T: DeserializeOwned>(&self, secret: &str) -> Result<Option<T>, Error> {
        let key = self.key(secret);
        let Some(stored) = self
            .cache
            .get(&key)
            .await
            .map_err(|e| unavailable(self.purpose, &e))?
        else {
            return Ok(None);
        };
        let removed = self
            .cache
            .compare_and_delete(&key, &stored)
            .await
            .map_err(|e| unavailable(self.purpose, &e))?;
        if !removed {
            return Ok(None);
        }
        Ok(self.open(secret, &key, &stored))
    }

    /// Removes the record of `secret`; true when there was one.
    pub(crate) async fn delete(&self, secret: &str) -> Result<bool, Error> {
        self.cache
            .delete(&self.key(secret))
            .await
            .map_err(|e| unavailable(self.purpose, &e))
    }

    /// Takes the lock of `secret`'s record for at most `ttl`: the owner token to
    /// release it with, or `None` when someone else holds it.
    pub(crate) async fn lock(&self, secret: &str, ttl: Duration) -> Result<Option<String>, Error> {
        let owner = new_secret();
        let key = format!("{}:lock", self.key(secret));
        let taken = self
            .cache
            .set_if_absent(&key, owner.as_bytes(), Some(ttl))
            .await
            .map_err(|e| unavailable(self.purpose, &e))?;
        Ok(taken.then_some(owner))
    }

    /// Releases a lock taken with [`Self::lock`], if still held by `owner`.
    pub(crate) async fn unlock(&self, secret: &str, owner: &str) {
        let key = format!("{}:lock", self.key(secret));
        if let Err(e) = self.cache.compare_and_delete(&key, owner.as_bytes()).await {
            tracing::warn!(error = %godel_error::chain(&e), purpose = self.purpose, "cannot release a lock; it expires by itself");
        }
    }

    fn open<T: DeserializeOwned>(&self, secret: &str, key: &str, stored: &[u8]) -> Option<T> {
        if stored.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let plain = self
            .cipher(secret)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: key.as_bytes(),
                },
            )
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

fn unavailable(purpose: &str, error: &godel_cache::CacheError) -> Error {
    tracing::warn!(error = %godel_error::chain(error), purpose, "the cache failed");
    Error::unavailable(format!(
        "sign-in state is unavailable ({purpose}): the cache did not answer"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn records_are_sealed_single_use_and_bound_to_their_secret() {
        let cache: Arc<dyn Cache> = Arc::new(godel_cache::MemoryCache::default());
        let sealed = Sealed::new(cache.clone(), "test");
        let secret = new_secret();
        sealed
            .put(&secret, &"the refresh token", Duration::from_secs(60))
            .await
            .unwrap();
        let raw = cache.get(&sealed.key(&secret)).await.unwrap().unwrap();
        assert!(
            !String::from_utf8_lossy(&raw).contains("refresh"),
            "stored in clear"
        );
        assert!(!sealed.key(&secret).contains(&secret));
        assert_eq!(sealed.get::<String>(&new_secret()).await.unwrap(), None);
        // A record copied under another secret's key does not open.
        let other = new_secret();
        cache.set(&sealed.key(&other), &raw, None).await.unwrap();
        assert_eq!(sealed.get::<String>(&other).await.unwrap(), None);
        assert_eq!(
            sealed.take::<String>(&secret).await.unwrap().as_deref(),
            Some("the refresh token")
        );
        assert_eq!(sealed.take::<String>(&secret).await.unwrap(), None);

        let owner = sealed
            .lock(&secret, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert!(
            sealed
                .lock(&secret, Duration::from_secs(5))
                .await
                .unwrap()
                .is_none()
        );
        sealed.unlock(&secret, &owner).await;
        assert!(
            sealed
                .lock(&secret, Duration::from_secs(5))
                .await
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn secrets_compare_in_full() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
