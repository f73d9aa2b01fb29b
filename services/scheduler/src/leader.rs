//! Leader election for the scheduler's singleton loops: a lease row per loop in the
//! scheduler's database, held by one replica at a time and measured by the
//! database's clock.
//!
//! A replica takes the lease when it is free or expired, which raises its epoch; the
//! holder renews it well before it expires and releases it on a clean shutdown. Every
//! write the leader makes as leader checks, in its own transaction, that its term
//! (holder + epoch) still holds the lease ([`Term::check`]), so a leader that paused
//! past its lease and woke up cannot act after a standby took over.

use std::time::Duration;

use godel_error::Error;
use godel_store::Db;
use godel_store::sea_orm::ConnectionTrait;

use crate::queue::store::{self, db_err, get, stmt};

/// One replica's candidacy for the lease `name`.
#[derive(Clone)]
pub struct Election {
    db: Db,
    name: &'static str,
    holder: String,
    ttl: Duration,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A held leadership: who and in which epoch. Proof for writes made as leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub name: &'static str,
    pub holder: String,
    pub epoch: u64,
}

/// Who holds a lease now, as the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub epoch: u64,
    /// The lease has not expired by the database's clock.
    pub live: bool,
}

impl Election {
    /// A candidacy for `name` with a fresh random holder id; a won lease lasts `ttl`
    /// unless renewed.
    pub fn new(db: Db, name: &'static str, ttl: Duration) -> Self {
        let holder = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        Self {
            db,
            name,
            holder,
            ttl,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease if it is free, expired or already ours; `None` while another
    /// replica holds a live lease. Taking it from someone else raises the epoch;
    /// renewing our own keeps it.
    pub async fn acquire(&self) -> Result<Option<Term>, Error> {
        let conn = self.db.conn();
        let now = store::db_now(conn).await?;
        let expires = now.saturating_add(store::micros(self.ttl));
        let row = conn
            .query_one_raw(stmt(
                conn,
                "INSERT INTO leader_leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (name) DO UPDATE SET \
                 epoch = CASE WHEN leader_leases.holder = excluded.holder \
                   THEN leader_leases.epoch ELSE leader_leases.epoch + 1 END, \
                 holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at < $4 \
                 RETURNING epoch",
                [
                    self.name.into(),
                    self.holder.clone().into(),
                    expires.into(),
                    now.into(),
                ],
            ))
            .await
            .map_err(db_err("taking the leader lease"))?;
        let Some(row) = row else { return Ok(None) };
        let epoch: i64 = get(&row, "epoch")?;
        Ok(Some(self.term(epoch)))
    }

    /// Extends our lease by the TTL from now. `false` when we no longer hold it (it
    /// expired and someone else took it, or it was released).
    pub async fn renew(&self, term: &Term) -> Result<bool, Error> {
        let conn = self.db.conn();
        let now = store::db_now(conn).await?;
        let expires = now.saturating_add(store::micros(self.ttl));
        let updated = conn
            .execute_raw(stmt(
                conn,
                "UPDATE leader_leases SET expires_at = $1 \
                 WHERE name = $2 AND holder = $3 AND epoch = $4 AND expires_at >= $5",
                [
                    expires.into(),
                    self.name.into(),
                    term.holder.clone().into(),
                    to_i64(term.epoch).into(),
                    now.into(),
                ],
            ))
            .await
            .map_err(db_err("renewing the leader lease"))?
            .rows_affected();
        Ok(updated == 1)
    }

    /// Gives the lease up at once (a clean shutdown), so a standby need not wait for
    /// it to expire.
    pub async fn release(&self, term: &Term) -> Result<(), Error> {
        let conn = self.db.conn();
        conn.execute_raw(stmt(
            conn,
            "UPDATE leader_leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3",
            [
                self.name.into(),
                term.holder.clone().into(),
                to_i64(term.epoch).into(),
            ],
        ))
        .await
        .map_err(db_err("releasing the leader lease"))?;
        Ok(())
    }

    /// Who holds the lease now, if anyone ever took it.
    pub async fn current(&self) -> Result<Option<Holder>, Error> {
        let conn = self.db.conn();
        let now = store::db_now(conn).await?;
        let row = conn
            .query_one_raw(stmt(
                conn,
                "SELECT holder, epoch, expires_at FROM leader_leases WHERE name = $1",
                [self.name.into()],
            ))
            .await
            .map_err(db_err("reading the leader lease"))?;
        let Some(row) = row else { return Ok(None) };
        let epoch: i64 = get(&row, "epoch")?;
        let expires: i64 = get(&row, "expires_at")?;
        Ok(Some(Holder {
            holder: get(&row, "holder")?,
            epoch: u64::try_from(epoch).unwrap_or(0),
            live: expires >= now,
        }))
    }

    fn term(&self, epoch: i64) -> Term {
        Term {
            name: self.name,
            holder: self.holder.clone(),
            epoch: u64::try_from(epoch).unwrap_or(0),
        }
    }
}

impl Term {
    /// Fails with `FAILED_PRECONDITION` unless this term still holds a live lease at
    /// `now` (database microseconds). On PostgreSQL it locks the lease row until
    /// `conn`'s transaction ends, so no one can take the lease over in between.
    pub async fn check<C: ConnectionTrait>(&self, conn: &C, now: i64) -> Result<(), Error> {
        let lock = store::for_update(conn, false);
        let row = conn
            .query_one_raw(stmt(
                conn,
                format!(
                    "SELECT 1 AS held FROM leader_leases WHERE name = $1 AND holder = $2 \
                     AND epoch = $3 AND expires_at >= $4{lock}"
                ),
                [
                    self.name.into(),
                    self.holder.clone().into(),
                    to_i64(self.epoch).into(),
                    now.into(),
                ],
            ))
            .await
            .map_err(db_err("checking the leader lease"))?;
        match row {
            Some(_) => Ok(()),
            None => Err(Error::failed_precondition(format!(
                "this replica no longer leads {} (epoch {})",
                self.name, self.epoch
            ))),
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
