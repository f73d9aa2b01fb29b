//! The signing-key rotation schedule: every `tokens.rotate_every` a new key takes
//! over signing (see [`tokens`](crate::tokens) for how old keys keep verifying).
//!
//! Every replica runs the schedule; the database decides. A rotation is due when
//! the current key is older than the period, and is made by a conditional update —
//! retire the current key *only if it is still unretired* — in the transaction
//! that inserts the new key. Of replicas that notice at the same moment, exactly
//! one sees its update change a row and inserts; the others see none and leave.
//! (PostgreSQL re-checks the condition after waiting for the winner's row lock;
//! SQLite serializes writers.)

use std::time::Duration;

use godel_error::Error;
use godel_store::sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use tokio_util::sync::CancellationToken;

use crate::entity::signing_key;
use crate::store::{Auth, db_error, now};
use crate::tokens::install_signing_key;

/// The longest sleep between checks: another replica may have rotated meanwhile,
/// and a clock may have been adjusted.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// The wait after a failed check.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(30);

impl Auth {
    /// Rotates the signing key when the current one is at least `every` old (or
    /// there is none). Returns the new `kid` when this call rotated, `None` when
    /// no rotation was due or another replica rotated first.
    pub async fn rotate_signing_key_if_due(
        &self,
        every: Duration,
    ) -> Result<Option<String>, Error> {
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        let current = self.current_signing_key().await?;
        let at = now();
        if let Some(key) = &current
            && key.created_at + every > at
        {
            return Ok(None);
        }
        let (kid, row) = self.generate_signing_key()?;
        let cutoff = at - self.key_overlap();
        let current_kid = current.map(|k| k.kid);
        let rotated = self
            .write(move |txn| {
                Box::pin(async move {
                    if let Some(current) = current_kid {
                        let retired = signing_key::Entity::update_many()
                            .col_expr(signing_key::Column::RetiredAt, Expr::value(at))
                            .filter(signing_key::Column::Kid.eq(current))
                            .filter(signing_key::Column::RetiredAt.is_null())
                            .exec(txn)
                            .await
                            .map_err(db_error("retiring the signing key"))?;
                        if retired.rows_affected != 1 {
                            return Ok(false);
                        }
                    }
                    install_signing_key(txn, row, cutoff).await?;
                    Ok(true)
                })
            })
            .await?;
        Ok(rotated.then_some(kid))
    }

    /// How long until the current key is `every` old (zero when due now).
    async fn until_rotation(&self, every: Duration) -> Result<Duration, Error> {
        let Some(key) = self.current_signing_key().await? else {
            return Ok(Duration::ZERO);
        };
        let due =
            key.created_at + chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        Ok((due - now()).to_std().unwrap_or(Duration::ZERO))
    }
}

/// Runs the schedule until `stop` is cancelled: sleeps until the current key is
/// due (re-checking at least every five minutes), then rotates if no other replica
/// did. Errors are logged and retried; they never stop the service.
pub async fn run(auth: Auth, every: Duration, stop: CancellationToken) {
    loop {
        let wait = match auth.rotate_signing_key_if_due(every).await {
            Ok(rotated) => {
                if let Some(kid) = rotated {
                    tracing::info!(%kid, "rotated the token signing key");
                }
                match auth.until_rotation(every).await {
                    Ok(wait) => wait.clamp(Duration::from_secs(1), MAX_CHECK_INTERVAL),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the signing key failed");
                        RETRY_AFTER_ERROR
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduled signing-key rotation failed; retrying");
                RETRY_AFTER_ERROR
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
