//! Sign-ins in progress: the `state`, `nonce` and PKCE material of each, stored
//! server-side between `BeginLogin` and `CompleteLogin`.
//!
//! Only hashes of the state and the nonce are stored. The PKCE verifier is derived
//! from the state and a stored random salt, so neither a reader of the database
//! (no state) nor whoever sees the redirect URL (no salt) can compute it. A state
//! is single use: `CompleteLogin` deletes its row before anything else, and only
//! the call whose delete removed the row goes on.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_store::sea_orm::{ActiveModelTrait, ActiveValue, ColumnTrait, EntityTrait, QueryFilter};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::entity::oidc_login;
use crate::refresh::{random_token, sha256_hex};
use crate::store::{Auth, db_error, now};

/// What `BeginLogin` hands out and keeps.
pub(crate) struct Started {
    pub state: String,
    pub nonce: String,
    pub code_challenge: String,
    pub expires_at: DateTime<Utc>,
}

/// A sign-in taken back by its state (and so no longer usable).
pub(crate) struct Pending {
    pub provider: String,
    pub nonce_sha256: String,
    pub code_verifier: String,
    pub redirect_uri: String,
}

/// The PKCE verifier (RFC 7636: 43 characters of the unreserved set).
fn code_verifier(salt: &[u8], state: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"godel-pkce-v1\0");
    hash.update(salt);
    hash.update(state.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// The S256 challenge of `verifier`.
fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn refused(why: &str) -> Error {
    Error::unauthenticated(format!("sign-in refused: {why}"))
}

impl Auth {
    /// Stores a new sign-in with `provider` returning to `redirect_uri`, valid for
    /// `timeout`, and deletes sign-ins that expired.
    pub(crate) async fn start_login(
        &self,
        provider: &str,
        redirect_uri: &str,
        timeout: std::time::Duration,
    ) -> Result<Started, Error> {
        let state = random_token("");
        let nonce = random_token("");
        let mut salt = [0u8; 32];
        rand::rng().fill_bytes(&mut salt);
        let verifier = code_verifier(&salt, &state);
        let at = now();
        let expires_at = at + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let row = oidc_login::ActiveModel {
            state_hash: ActiveValue::Set(sha256_hex(&state)),
            provider: ActiveValue::Set(provider.to_owned()),
            nonce_hash: ActiveValue::Set(sha256_hex(&nonce)),
            pkce_salt: ActiveValue::Set(salt.to_vec()),
            redirect_uri: ActiveValue::Set(redirect_uri.to_owned()),
            created_at: ActiveValue::Set(at),
            expires_at: ActiveValue::Set(expires_at),
        };
        self.write(move |txn| {
            Box::pin(async move {
                oidc_login::Entity::delete_many()
                    .filter(oidc_login::Column::ExpiresAt.lt(at))
                    .exec(txn)
                    .await
                    .map_err(db_error("deleting expired sign-ins"))?;
                row.insert(txn)
                    .await
                    .map_err(db_error("storing a sign-in"))?;
                Ok(())
            })
        })
        .await?;
        Ok(Started {
            state,
            nonce,
            code_challenge: code_challenge(&verifier),
            expires_at,
        })
    }

    /// Takes the sign-in `state` names, once: unknown, already taken and expired
    /// states are `unauthenticated`.
    pub(crate) async fn take_login(&self, state: &str) -> Result<Pending, Error> {
        if state.is_empty() {
            return Err(refused("no state"));
        }
        let hash = sha256_hex(state);
        let row = self
            .write(move |txn| {
                Box::pin(async move {
                    let Some(row) = oidc_login::Entity::find_by_id(hash.clone())
                        .one(txn)
                        .await
                        .map_err(db_error("reading a sign-in"))?
                    else {
                        return Ok(None);
                    };
                    let deleted = oidc_login::Entity::delete_by_id(hash)
                        .exec(txn)
                        .await
                        .map_err(db_error("taking a sign-in"))?;
                    Ok((deleted.rows_affected == 1).then_some(row))
                })
            })
            .await?
            .ok_or_else(|| refused("unknown or already used state"))?;
        if row.expires_at <= now() {
            return Err(refused("the sign-in expired; start again"));
        }
        Ok(Pending {
            code_verifier: code_verifier(&row.pkce_salt, state),
            provider: row.provider,
            nonce_sha256: row.nonce_hash,
            redirect_uri: row.redirect_uri,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_needs_both_salt_and_state_and_has_the_pkce_shape() {
        let v = code_verifier(&[1; 32], "state");
        assert_eq!(v.len(), 43);
        assert_ne!(v, code_verifier(&[2; 32], "state"));
        assert_ne!(v, code_verifier(&[1; 32], "other"));
        // RFC 7636 appendix B.
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
