//! [`VaultTransit`]: data keys wrapped by HashiCorp Vault's Transit secrets engine
//! (`POST /v1/<mount>/encrypt/<key>` and `/decrypt/<key>`, authenticated with
//! `X-Vault-Token`, optionally in a namespace). The key-encryption key never leaves
//! Vault; the associated data goes along as Transit's `associated_data`, so Vault's
//! AEAD binds it too.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::kek::{Kek, KekError};
use crate::config::VaultConfig;

/// The Vault Transit backend.
pub struct VaultTransit {
    config: VaultConfig,
    client: reqwest::Client,
}

impl fmt::Debug for VaultTransit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultTransit")
            .field("address", &self.config.address)
            .field("mount", &self.config.mount)
            .field("key_name", &self.config.key_name)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TransitResponse {
    data: TransitData,
}

#[derive(Deserialize)]
struct TransitData {
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    plaintext: Option<String>,
}

#[derive(Deserialize)]
struct VaultErrors {
    #[serde(default)]
    errors: Vec<String>,
}

impl VaultTransit {
    pub fn new(config: VaultConfig) -> Result<Self, KekError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|source| KekError::VaultUnreachable {
                address: config.address.clone(),
                source,
            })?;
        Ok(Self { config, client })
    }

    async fn call(
        &self,
        operation: &str,
        body: serde_json::Value,
    ) -> Result<TransitData, KekError> {
        let url = format!(
            "{}/v1/{}/{operation}/{}",
            self.config.address.trim_end_matches('/'),
            self.config.mount.trim_matches('/'),
            self.config.key_name
        );
        let mut request = self
            .client
            .post(url)
            .header("X-Vault-Token", self.config.token.expose())
            .json(&body);
        if let Some(namespace) = self.config.namespace.as_deref().filter(|n| !n.is_empty()) {
            request = request.header("X-Vault-Namespace", namespace);
        }
        let unreachable = |source| KekError::VaultUnreachable {
            address: self.config.address.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<VaultErrors>(&bytes)
                .map(|e| e.errors.join("; "))
                .unwrap_or_default();
            return Err(KekError::Vault {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice::<TransitResponse>(&bytes)
            .map(|r| r.data)
            .map_err(|e| KekError::Vault {
                status: status.as_u16(),
                message: format!("unreadable Transit response: {e}"),
            })
    }
}

#[async_trait::async_trait]
impl Kek for VaultTransit {
    async fn id(&self) -> Result<String, KekError> {
        Ok(format!(
            "vault:{}/{}",
            self.config.mount.trim_matches('/'),
            self.config.key_name
        ))
    }

    async fn wrap(&self, data_key: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let data = self
            .call(
                "encrypt",
                serde_json::json!({
                    "plaintext": B64.encode(data_key),
                    "associated_data": B64.encode(aad),
                }),
            )
            .await?;
        data.ciphertext
            .map(String::into_bytes)
            .ok_or_else(|| KekError::Vault {
                status: 200,
                message: "the encrypt response holds no ciphertext".to_owned(),
            })
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let ciphertext = std::str::from_utf8(wrapped).map_err(|_| KekError::Unwrap)?;
        let data = self
            .call(
                "decrypt",
                serde_json::json!({
                    "ciphertext": ciphertext,
                    "associated_data": B64.encode(aad),
                }),
            )
            .await
            .map_err(|error| match error {
                // Vault answers 400 when the ciphertext or its associated data do
                // not authenticate.
                KekError::Vault { status: 400, .. } => KekError::Unwrap,
                other => other,
            })?;
        let plaintext = data.plaintext.ok_or(KekError::Unwrap)?;
        B64.decode(plaintext).map_err(|_| KekError::Unwrap)
    }
}
