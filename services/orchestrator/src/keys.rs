//! Teams' model-provider keys, stored encrypted (DESIGN.md §3 invariant 6).
//!
//! Envelope encryption: every stored secret (and every rotation of it) gets a fresh
//! random 32-byte data key; the secret is sealed with XChaCha20-Poly1305 under it,
//! and the data key is wrapped by the key-encryption backend ([`Kek`]: a local key
//! file or Vault Transit). Both are sealed with associated data naming the team, the
//! key id and the version, so a ciphertext copied into another team's row, another
//! key's row or an older version's place does not decrypt.
//!
//! Secrets come in as [`Secret`] and go out only to the LLM proxy
//! ([`ProviderKeys::reveal`]); metadata ([`ProviderKey`]) is all the API returns.

pub mod kek;
mod store;
mod vault;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use godel_config::Secret;
use godel_error::Error;
use godel_store::Db;
use godel_types::{SecretId, TeamId};
use rand::RngCore;

pub use kek::{Kek, KekError, LocalKek};
pub use vault::VaultTransit;

use crate::config::{KekBackend, KeysConfig};
use store::Sealed;

/// A stored provider key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderKey {
    pub id: SecretId,
    pub team_id: TeamId,
    /// `openai`, `anthropic`, …
    pub provider: String,
    /// Unique per team and provider.
    pub name: String,
    /// The secret's last four characters.
    pub hint: String,
    /// 1, then +1 per rotation.
    pub version: u32,
    /// The key-encryption key that wrapped its data key.
    pub kek_id: String,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

/// The encrypted provider key store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProviderKeys {
    db: Db,
    kek: Arc<dyn Kek>,
}

/// The associated data a key's secret and data key are sealed with.
fn associated_data(team: TeamId, id: SecretId, version: u32) -> Vec<u8> {
    format!("godel/provider-key/v1\n{team}\n{id}\n{version}").into_bytes()
}

/// The current time at the precision it is stored with (microseconds).
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The last four characters, for telling keys apart; nothing for short secrets.
fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return String::new();
    }
    chars[chars.len() - 4..].iter().collect()
}

fn kek_error(error: &KekError) -> Error {
    // The error names paths, addresses and statuses, never key material.
    tracing::error!(error = %godel_error::chain(error), "the key-encryption backend failed");
    match error {
        KekError::Unwrap => Error::failed_precondition(
            "a stored provider key does not decrypt: its stored form does not belong to this row",
        ),
        _ => Error::unavailable(format!(
            "the key-encryption backend is unavailable: {}",
            godel_error::chain(error)
        )),
    }
}

fn validate_label(field: &str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            field,
            format!("`{field}` must be 1 to 64 characters of letters, digits, `-`, `_` or `.`"),
        ))
    }
}

fn validate_secret(secret: &Secret<String>) -> Result<(), Error> {
    let s = secret.expose();
    if s.trim().is_empty() || s.len() > 4096 || s.chars().any(char::is_control) {
        return Err(Error::invalid_argument(
            "secret",
            "`secret` must be 1 to 4096 characters without control characters",
        ));
    }
    Ok(())
}

impl ProviderKeys {
    /// Keys stored in `db` (migrated with the orchestrator's migrations), wrapped
    /// by `kek`.
    pub fn new(db: Db, kek: Arc<dyn Kek>) -> Self {
        Self { db, kek }
    }

    /// The key-encryption backend `config` names. A local key file is read (or
    /// created) on first use, so a misconfigured one fails the key operations,
    /// not the orchestrator's start.
    pub fn kek_from_config(config: &KeysConfig) -> Result<Arc<dyn Kek>, Error> {
        Ok(match config.backend {
            KekBackend::Local => Arc::new(LocalKek::new(
                config.local.path.clone(),
                config.local.create_if_missing,
            )),
            KekBackend::Vault => {
                Arc::new(VaultTransit::new(config.vault.clone()).map_err(|e| kek_error(&e))?)
            }
        })
    }

    /// Seals `secret` for `team`, key `id` at `version` under a fresh data key.
    async fn seal(
        &self,
        team: TeamId,
        id: SecretId,
        version: u32,
        secret: &Secret<String>,
    ) -> Result<Sealed, Error> {
        let aad = associated_data(team, id, version);
        let mut data_key = [0u8; kek::KEY_LEN];
        rand::rng().fill_bytes(&mut data_key);
        let ciphertext = kek::aead_seal(&data_key, secret.expose().as_bytes(), &aad)
            .ok_or_else(|| Error::internal("sealing a provider key failed"))?;
        let wrapped = self.kek.wrap(&data_key, &aad).await;
        data_key.fill(0);
        let wrapped_key = wrapped.map_err(|e| kek_error(&e))?;
        let kek_id = self.kek.id().await.map_err(|e| kek_error(&e))?;
        Ok(Sealed {
            ciphertext,
            wrapped_key,
            kek_id,
        })
    }

    /// Stores a new key; `already_exists` when the team has one with this provider
    /// and name.
    pub async fn set(
        &self,
        team: TeamId,
        provider: &str,
        name: &str,
        secret: Secret<String>,
    ) -> Result<ProviderKey, Error> {
        validate_label("provider", provider)?;
        validate_label("name", name)?;
        validate_secret(&secret)?;
        let id = SecretId::new();
        let sealed = self.seal(team, id, 1, &secret).await?;
        let key = ProviderKey {
            id,
            team_id: team,
            provider: provider.to_owned(),
            name: name.to_owned(),
            hint: hint(secret.expose()),
            version: 1,
            kek_id: sealed.kek_id.clone(),
            created_at: now(),
            rotated_at: None,
        };
        store::insert(self.db.conn(), &key, &sealed).await?;
        tracing::info!(team_id = %team, key_id = %id, provider, name, "provider key stored");
        Ok(key)
    }

    /// Replaces the secret of key `id` of `team` (a new data key, the next
    /// version); what the proxy sends upstream changes at once.
    pub async fn rotate(
        &self,
        team: TeamId,
        id: SecretId,
        secret: Secret<String>,
    ) -> Result<ProviderKey, Error> {
        validate_secret(&secret)?;
        let current = store::by_id(self.db.conn(), team, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("provider key {id}")))?;
        let mut key = current.key;
        key.version += 1;
        let sealed = self.seal(team, id, key.version, &secret).await?;
        key.hint = hint(secret.expose());
        key.kek_id = sealed.kek_id.clone();
        key.rotated_at = Some(now());
        if !store::rotate(self.db.conn(), &key, &sealed).await? {
            return Err(Error::aborted(format!(
                "provider key {id} was rotated concurrently; retry"
            )));
        }
        tracing::info!(team_id = %team, key_id = %id, version = key.version, "provider key rotated");
        Ok(key)
    }

    /// `team`'s keys, by provider and name.
    pub async fn list(&self, team: TeamId) -> Result<Vec<ProviderKey>, Error> {
        store::list(self.db.conn(), team).await
    }

    /// The secret of `team`'s key `name` for `provider`, decrypted. For the LLM
    /// proxy only: the value goes into one upstream request header.
    pub async fn reveal(
        &self,
        team: TeamId,
        provider: &str,
        name: &str,
    ) -> Result<(ProviderKey, Secret<String>), Error> {
        let row = store::by_name(self.db.conn(), team, provider, name)
            .await?
            .ok_or_else(|| {
                Error::failed_precondition(format!(
                    "the team has no `{provider}` provider key named `{name}`"
                ))
            })?;
        let current_kek = self.kek.id().await.map_err(|e| kek_error(&e))?;
        if row.sealed.kek_id != current_kek {
            tracing::error!(key_id = %row.key.id, stored = %row.sealed.kek_id, configured = %current_kek,
                "a provider key was wrapped by another key-encryption key");
            return Err(Error::failed_precondition(format!(
                "provider key {} was wrapped by key-encryption key `{}`, not the configured `{current_kek}`",
                row.key.id, row.sealed.kek_id
            )));
        }
        let aad = associated_data(team, row.key.id, row.key.version);
        let mut data_key = self
            .kek
            .unwrap(&row.sealed.wrapped_key, &aad)
            .await
            .map_err(|e| kek_error(&e))?;
        let opened = kek::aead_open(&data_key, &row.sealed.ciphertext, &aad);
        data_key.fill(0);
        let plain = opened.ok_or_else(|| kek_error(&KekError::Unwrap))?;
        let secret = String::from_utf8(plain)
            .map_err(|_| Error::internal("a stored provider key is not text"))?;
        Ok((row.key, Secret::new(secret)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_show_only_the_end_of_long_secrets() {
        assert_eq!(hint("sk-abcdefghijklmnop"), "mnop");
        assert_eq!(hint("short"), "");
    }

    #[test]
    fn associated_data_names_team_key_and_version() {
        let (team, id) = (TeamId::new(), SecretId::new());
        assert_ne!(associated_data(team, id, 1), associated_data(team, id, 2));
        assert_ne!(
            associated_data(team, id, 1),
            associated_data(TeamId::new(), id, 1)
        );
    }
}
