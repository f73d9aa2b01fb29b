//! Browser sessions: an opaque id in a cookie, the Godel token pair and the CSRF
//! token behind it in the cache ([`Sealed`]), for as long as the refresh token
//! lives.
//!
//! A request that finds the access token expiring within `login.refresh_margin`
//! rotates the refresh token (auth's `RefreshToken`) under a short lock, so two
//! concurrent requests never present the same refresh token (which auth would take
//! for theft and answer by revoking the whole family). Ending a session removes the
//! record and revokes the family: the cookie is useless from then on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use godel_error::{Error, ErrorCode};
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::auth::v1::{RefreshTokenRequest, RevokeTokenRequest, TokenPair};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::sealed::{Sealed, new_secret, same};

/// Longest a refresh may hold a session's lock.
const LOCK_TTL: Duration = Duration::from_secs(15);

/// A session's tokens and CSRF token, as kept in the cache.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) access_token: String,
    pub(crate) access_expires_at: DateTime<Utc>,
    refresh_token: String,
    refresh_expires_at: DateTime<Utc>,
    csrf: String,
}

/// When a pair's access token and refresh token expire.
pub(crate) fn expiries(tokens: &TokenPair) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    let time = |field: &str, t: Option<&godel_proto::pbjson_types::Timestamp>| {
        godel_proto::convert::from_required_timestamp(field, t)
    };
    Ok((
        time("access_expires_at", tokens.access_expires_at.as_ref())?,
        time("refresh_expires_at", tokens.refresh_expires_at.as_ref())?,
    ))
}

impl Record {
    /// A record of `tokens` keeping `csrf`.
    pub(crate) fn new(tokens: &TokenPair, csrf: String) -> Result<Self, Error> {
        let (access_expires_at, refresh_expires_at) = expiries(tokens)?;
        Ok(Self {
            access_token: tokens.access_token.clone(),
            access_expires_at,
            refresh_token: tokens.refresh_token.clone(),
            refresh_expires_at,
            csrf,
        })
    }

    /// Refuses a state-changing request whose `X-CSRF-Token` is not this session's.
    pub(crate) fn check_csrf(&self, header: Option<&str>) -> Result<(), Error> {
        match header {
            Some(token) if same(token, &self.csrf) => Ok(()),
            _ => Err(Error::permission_denied(
                "a request authenticated by the session cookie that changes state must \
                 send the `godel_csrf` cookie's value in the `X-CSRF-Token` header",
            )),
        }
    }

    fn ttl(&self) -> Duration {
        (self.refresh_expires_at - Utc::now())
            .to_std()
            .unwrap_or_default()
    }
}

/// A session just started: the cookie values and how long they last.
pub(crate) struct Started {
    pub(crate) id: String,
    pub(crate) csrf: String,
    pub(crate) max_age: Duration,
}

/// The sessions of every browser signed in through this gateway's cache.
#[derive(Clone)]
pub(crate) struct Sessions {
    records: Sealed,
    auth: AuthServiceClient<Channel>,
    margin: Duration,
    timeout: Duration,
}

impl Sessions {
    pub(crate) fn new(
        records: Sealed,
        auth: AuthServiceClient<Channel>,
        margin: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            records,
            auth,
            margin,
            timeout,
        }
    }

    /// Starts a session holding `tokens` (from a completed sign-in).
    pub(crate) async fn start(&self, tokens: &TokenPair) -> Result<Started, Error> {
        let record = Record::new(tokens, new_secret())?;
        let id = new_secret();
        let max_age = record.ttl();
        self.records.put(&id, &record, max_age).await?;
        Ok(Started {
            id,
            csrf: record.csrf,
            max_age,
        })
    }

    /// The session `id` names, or 401 when it is unknown, ended or expired.
    pub(crate) async fn load(&self, id: &str) -> Result<Record, Error> {
        self.records
            .get(id)
            .await?
            .ok_or_else(|| Error::unauthenticated("no session: sign in again (GET /auth/login)"))
    }

    /// `record` with an access token good for at least the refresh margin: itself,
    /// or renewed.
    pub(crate) async fn fresh(&self, id: &str, record: Record) -> Result<Record, Error> {
        let margin = chrono::Duration::from_std(self.margin).unwrap_or_default();
        if record.access_expires_at - margin > Utc::now() {
            return Ok(record);
        }
        self.refresh(id, false).await
    }

    /// Rotates the session's refresh token (always when `force`, else only when the
    /// access token is still expiring once the lock is held) and returns the record.
    pub(crate) async fn refresh(&self, id: &str, force: bool) -> Result<Record, Error> {
        let Some(owner) = self.records.lock(id, LOCK_TTL).await? else {
            return Err(Error::aborted(
                "this session is being refreshed by another request: retry",
            ));
        };
        let result = self.refresh_locked(id, force).await;
        self.records.unlock(id, &owner).await;
        result
    }

    async fn refresh_locked(&self, id: &str, force: bool) -> Result<Record, Error> {
        let record = self.load(id).await?;
        let margin = chrono::Duration::from_std(self.margin).unwrap_or_default();
        if !force && record.access_expires_at - margin > Utc::now() {
            return Ok(record);
        }
        let mut request = tonic::Request::new(RefreshTokenRequest {
            refresh_token: record.refresh_token.clone(),
        });
        request.set_timeout(self.timeout);
        let tokens = match self.auth.clone().refresh_token(request).await {
            Ok(response) => response.into_inner().tokens.unwrap_or_default(),
            Err(status) => {
                let error = Error::from_status(&status);
                if error.code == ErrorCode::Unauthenticated {
                    self.records.delete(id).await?;
                    return Err(Error::unauthenticated(
                        "the session ended (signed out, expired, or its refresh token was \
                         reused): sign in again",
                    ));
                }
                return Err(error);
            }
        };
        let renewed = Record::new(&tokens, record.csrf)?;
        self.records.put(id, &renewed, renewed.ttl()).await?;
        Ok(renewed)
    }

    /// Ends the session `id` names: its record is removed and its refresh-token
    /// family revoked. Ending an unknown session does nothing.
    pub(crate) async fn end(&self, id: &str) -> Result<(), Error> {
        let Some(record) = self.records.take::<Record>(id).await? else {
            return Ok(());
        };
        revoke(&self.auth, &record.refresh_token, self.timeout).await
    }
}

/// Revokes `refresh_token`'s family at auth.
pub(crate) async fn revoke(
    auth: &AuthServiceClient<Channel>,
    refresh_token: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let mut request = tonic::Request::new(RevokeTokenRequest {
        refresh_token: refresh_token.to_owned(),
    });
    request.set_timeout(timeout);
    auth.clone()
        .revoke_token(request)
        .await
        .map_err(|status| Error::from_status(&status))?;
    Ok(())
}
