//! Sign-in sessions: a pair of an access token and an opaque refresh token.
//!
//! Refresh tokens are 256 random bits (`gdr_…`), stored only as their SHA-256. Each
//! belongs to a family (one sign-in session) with an absolute end: refreshing never
//! extends it. Every refresh rotates the token; presenting a token that was already
//! rotated means it leaked (or a client replayed it), so the whole family is revoked
//! and every token of it stops working. Logout revokes the family too. Access tokens
//! already issued in a revoked family stay valid until they expire (minutes).

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_store::sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    sea_query::Expr,
};
use godel_types::{TeamId, UserId};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::directory::find_user;
use crate::entity::{refresh_family, refresh_token};
use crate::store::{Auth, db_error, now};

/// The prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "gdr_";

/// An access token and the refresh token that renews it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    /// The end of the sign-in session.
    pub refresh_expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish_non_exhaustive()
    }
}

pub(crate) fn random_token(prefix: &str) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn rejected(why: &str) -> Error {
    Error::unauthenticated(format!("invalid refresh token: {why}"))
}

/// What a refresh attempt found, decided inside the transaction.
enum Refreshed {
    Rotated {
        user: UserId,
        team: Option<TeamId>,
        family: uuid::Uuid,
        expires_at: DateTime<Utc>,
        token: String,
    },
    Reused,
}

impl Auth {
    /// Starts a sign-in session for `user` (acting in `team`): a new refresh-token
    /// family and the first pair of tokens.
    pub async fn start_session(
        &self,
        user: UserId,
        team: Option<TeamId>,
    ) -> Result<TokenPair, Error> {
        find_user(self.db.conn(), user).await?;
        let family = uuid::Uuid::now_v7();
        let at = now();
        let expires_at = at
            + chrono::Duration::from_std(self.tokens.session_lifetime)
                .unwrap_or(chrono::Duration::MAX);
        let token = random_token(REFRESH_TOKEN_PREFIX);
        let hash = sha256_hex(&token);
        self.write(move |txn| {
            Box::pin(async move {
                refresh_family::ActiveModel {
                    id: ActiveValue::Set(family),
                    user_id: ActiveValue::Set(user.as_uuid()),
                    team_id: ActiveValue::Set(team.map(|t| t.as_uuid())),
                    created_at: ActiveValue::Set(at),
                    expires_at: ActiveValue::Set(expires_at),
                    revoked_at: ActiveValue::Set(None),
                    revoked_reason: ActiveValue::Set(None),
                }
                .insert(txn)
                .await
                .map_err(db_error("inserting a session"))?;
                insert_token(txn, hash, family, at).await
            })
        })
        .await?;
        self.pair(user, team, family, expires_at, token).await
    }

    /// Trades `refresh_token` for a new pair. A token already traded revokes its
    /// whole family and fails; so do revoked, expired and unknown tokens.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, Error> {
        if !refresh_token.starts_with(REFRESH_TOKEN_PREFIX) {
            return Err(rejected("not a refresh token"));
        }
        let hash = sha256_hex(refresh_token);
        let outcome = self
            .write(move |txn| Box::pin(async move { rotate(txn, hash).await }))
            .await?;
        match outcome {
            Refreshed::Rotated {
                user,
                team,
                family,
                expires_at,
                token,
            } => self.pair(user, team, family, expires_at, token).await,
            Refreshed::Reused => {
                tracing::warn!(
                    "a rotated refresh token was presented again; its session is revoked"
                );
                Err(rejected("already used; the session is revoked"))
            }
        }
    }

    /// Logout: revokes the session `refresh_token` belongs to (its whole family).
    /// Unknown tokens fail with `unauthenticated`.
    pub async fn revoke_refresh_token(&self, refresh_token: &str) -> Result<(), Error> {
        let hash = sha256_hex(refresh_token);
        self.write(move |txn| {
            Box::pin(async move {
                let row = refresh_token::Entity::find_by_id(hash)
                    .one(txn)
                    .await
                    .map_err(db_error("reading a refresh token"))?
                    .ok_or_else(|| rejected("unknown"))?;
                revoke_family(txn, row.family_id, "logout").await
            })
        })
        .await
    }

    async fn pair(
        &self,
        user: UserId,
        team: Option<TeamId>,
        family: uuid::Uuid,
        expires_at: DateTime<Utc>,
        refresh_token: String,
    ) -> Result<TokenPair, Error> {
        let access = self
            .issue_access_token(
                user,
                team,
                Some(family.simple().to_string()),
                Some(expires_at),
            )
            .await?;
        Ok(TokenPair {
            access_token: access.token,
            access_expires_at: access.expires_at,
            refresh_token,
            refresh_expires_at: expires_at,
        })
    }
}

async fn insert_token(
    txn: &DatabaseTransaction,
    hash: String,
    family: uuid::Uuid,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    refresh_token::ActiveModel {
        token_hash: ActiveValue::Set(hash),
        family_id: ActiveValue::Set(family),
        created_at: ActiveValue::Set(at),
        rotated_at: ActiveValue::Set(None),
    }
    .insert(txn)
    .await
    .map_err(db_error("inserting a refresh token"))?;
    Ok(())
}

async fn revoke_family(
    txn: &DatabaseTransaction,
    family: uuid::Uuid,
    reason: &str,
) -> Result<(), Error> {
    refresh_family::Entity::update_many()
        .col_expr(refresh_family::Column::RevokedAt, Expr::value(now()))
        .col_expr(refresh_family::Column::RevokedReason, Expr::value(reason))
        .filter(refresh_family::Column::Id.eq(family))
        .filter(refresh_family::Column::RevokedAt.is_null())
        .exec(txn)
        .await
        .map_err(db_error("revoking a session"))?;
    Ok(())
}

async fn rotate(txn: &DatabaseTransaction, hash: String) -> Result<Refreshed, Error> {
    let row = refresh_token::Entity::find_by_id(hash.clone())
        .one(txn)
        .await
        .map_err(db_error("reading a refresh token"))?
        .ok_or_else(|| rejected("unknown"))?;
    let family = refresh_family::Entity::find_by_id(row.family_id)
        .one(txn)
        .await
        .map_err(db_error("reading a session"))?
        .ok_or_else(|| rejected("unknown session"))?;
    if family.revoked_at.is_some() {
        return Err(rejected("the session is revoked"));
    }
    let at = now();
    if family.expires_at <= at {
        return Err(rejected("the session has expired"));
    }
    if row.rotated_at.is_some() {
        revoke_family(txn, family.id, "refresh token reuse").await?;
        return Ok(Refreshed::Reused);
    }
    // Only one of two concurrent refreshes with the same token wins this update; the
    // other sees no row changed and counts as a reuse.
    let claimed = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RotatedAt, Expr::value(at))
        .filter(refresh_token::Column::TokenHash.eq(hash))
        .filter(refresh_token::Column::RotatedAt.is_null())
        .exec(txn)
        .await
        .map_err(db_error("rotating a refresh token"))?;
    if claimed.rows_affected != 1 {
        revoke_family(txn, family.id, "refresh token reuse").await?;
        return Ok(Refreshed::Reused);
    }
    let token = random_token(REFRESH_TOKEN_PREFIX);
    insert_token(txn, sha256_hex(&token), family.id, at).await?;
    Ok(Refreshed::Rotated {
        user: UserId::from_uuid(family.user_id),
        team: family.team_id.map(TeamId::from_uuid),
        family: family.id,
        expires_at: family.expires_at,
        token,
    })
}
