//! What verification accepts in place of a payload's digest: the recorded
//! retention runs and subject erasures.
//!
//! A payload that is gone, or marked `erased`, is only accepted when a record of
//! the service's own action accounts for it:
//!
//! - an **`audit.retention`** record lists its rules (team, or the default with the
//!   teams it excluded, and the cutoff time); a removed payload is accounted for when
//!   a later retention record has a rule matching the entry's team and time;
//! - an **`audit.erasure`** record lists every payload it scrubbed with the digest of
//!   what the scrub left; an `erased` payload is accounted for when the latest
//!   erasure that lists it gives exactly its current digest.
//!
//! Those records are themselves chained and digest-checked, are never removed by
//! retention nor scrubbed by a later erasure, and only the service writes them: the
//! `audit.` actions are refused on [`crate::AuditLog::append`], and their details
//! carry an Ed25519 signature with the checkpoint key over the record id and what
//! they account for, so one forged in the database (say at the chain's unchecked
//! tail) accounts for nothing. So setting the `erased` flag on a row, or deleting a
//! payload, hides nothing.

use std::collections::HashMap;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use godel_store::Db;
use godel_store::sea_orm::{ConnectionTrait, QueryResult};
use serde::{Deserialize, Serialize};

use crate::canonical::{ChainEntry, Hash, parse_hash};
use crate::error::AuditError;
use crate::store::{self, COLUMNS, FROM, Sql, db_err, to_i64};

/// The action of the record a subject erasure appends.
pub(crate) const ERASURE_ACTION: &str = "audit.erasure";
/// The action of the record a retention run appends.
pub(crate) const RETENTION_ACTION: &str = "audit.retention";
/// The action of the record a retention override change appends.
pub(crate) const POLICY_ACTION: &str = "audit.retention_policy.set";
/// Actions only the audit service itself writes.
pub(crate) const RESERVED_PREFIX: &str = "audit.";

/// The `team` of a retention rule covering every team without its own period.
pub(crate) const DEFAULT_RULE: &str = "default";

/// The details of an `audit.erasure` record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErasureDetails {
    #[serde(default)]
    pub reason: String,
    pub records_scrubbed: u64,
    /// (sequence, hex digest of the scrubbed payload), by sequence.
    pub scrubbed: Vec<(u64, String)>,
    /// Hex Ed25519 signature of [`erasure_message`] with the checkpoint key.
    #[serde(default)]
    pub signature: String,
}

/// The details of an `audit.retention` record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RetentionDetails {
    #[serde(default)]
    pub reason: String,
    pub payloads_removed: u64,
    pub rules: Vec<RetentionRule>,
    /// Hex Ed25519 signature of [`retention_message`] with the checkpoint key.
    #[serde(default)]
    pub signature: String,
}

/// One rule of a retention run: payloads of `team` (or, for [`DEFAULT_RULE`], of
/// every team not in `except`, records without a team included) that occurred
/// before `before_ns` were removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RetentionRule {
    pub team: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    pub before_ns: i64,
    pub removed: u64,
}

const ERASURE_TAG: &str = "godel.audit.erasure.v1";
const RETENTION_TAG: &str = "godel.audit.retention.v1";

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

/// What an erasure record's signature covers: a SHA-256 over a tag, the record id
/// and every (sequence, digest) it lists.
pub(crate) fn erasure_message(record_id: &str, scrubbed: &[(u64, String)]) -> Hash {
    let mut h = Sha256::new();
    put_str(&mut h, ERASURE_TAG);
    put_str(&mut h, record_id);
    h.update((scrubbed.len() as u64).to_be_bytes());
    for (sequence, digest) in scrubbed {
        h.update(sequence.to_be_bytes());
        put_str(&mut h, digest);
    }
    h.finalize().into()
}

/// What a retention record's signature covers: a SHA-256 over a tag, the record id
/// and every rule (team, excluded teams, cutoff).
pub(crate) fn retention_message(record_id: &str, rules: &[RetentionRule]) -> Hash {
    let mut h = Sha256::new();
    put_str(&mut h, RETENTION_TAG);
    put_str(&mut h, record_id);
    h.update((rules.len() as u64).to_be_bytes());
    for rule in rules {
        put_str(&mut h, &rule.team);
        h.update((rule.except.len() as u64).to_be_bytes());
        for team in &rule.except {
            put_str(&mut h, team);
        }
        h.update(rule.before_ns.to_be_bytes());
    }
    h.finalize().into()
}

fn signed(key: &VerifyingKey, message: &Hash, signature: &str) -> bool {
    let mut sig = [0u8; 64];
    hex::decode_to_slice(signature, &mut sig).is_ok()
        && key.verify(message, &Signature::from_bytes(&sig)).is_ok()
}

impl RetentionRule {
    fn covers(&self, entry: &ChainEntry) -> bool {
        if entry.occurred_at_ns >= self.before_ns {
            return false;
        }
        if self.team == DEFAULT_RULE {
            !self.except.contains(&entry.team_id)
        } else {
            self.team == entry.team_id
        }
    }
}

/// True when the row's payload is marked scrubbed by an erasure. Unreadable counts
/// as not marked, so the payload's digest is checked.
pub(crate) fn marked_erased(row: &QueryResult) -> bool {
    row.try_get::<Option<bool>>("", "p_erased")
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The recorded retention runs and erasures, loaded from the chain.
pub(crate) struct Coverage {
    /// Checks the records' signatures.
    key: VerifyingKey,
    /// Sequence → digest the latest erasure listing it left.
    scrubbed: HashMap<u64, Hash>,
    /// (sequence of the retention record, rule), in sequence order.
    rules: Vec<(u64, RetentionRule)>,
    /// The last sequence looked at.
    loaded_to: u64,
}

impl Coverage {
    /// Loads every intact retention and erasure record signed with `key`.
    pub(crate) async fn load(db: &Db, key: &VerifyingKey) -> Result<Self, AuditError> {
        let mut coverage = Self {
            key: *key,
            scrubbed: HashMap::new(),
            rules: Vec::new(),
            loaded_to: 0,
        };
        coverage.refresh(db).await?;
        Ok(coverage)
    }

    /// Loads the records appended since the last load (a run may have committed
    /// while verification walked).
    async fn refresh(&mut self, db: &Db) -> Result<(), AuditError> {
        let conn = db.conn();
        let mut sql = Sql::new(conn.get_database_backend(), "SELECT ");
        sql.push(COLUMNS).push(FROM).push(" WHERE p.action IN (");
        sql.bind(ERASURE_ACTION).push(", ").bind(RETENTION_ACTION);
        sql.push(") AND c.sequence > ").bind(to_i64(self.loaded_to));
        sql.push(" ORDER BY c.sequence");
        let rows = conn
            .query_all_raw(sql.build())
            .await
            .map_err(db_err("reading retention and erasure records"))?;
        for row in &rows {
            // Damaged records are skipped here; the walk reports them at their place.
            let Ok((entry, Some(payload))) = store::decode(row) else {
                continue;
            };
            self.loaded_to = self.loaded_to.max(entry.sequence);
            if marked_erased(row)
                || entry.recompute() != entry.hash
                || payload.digest() != entry.payload_digest
            {
                continue;
            }
            if payload.action == ERASURE_ACTION {
                let Ok(details) = serde_json::from_str::<ErasureDetails>(&payload.details) else {
                    continue;
                };
                let message = erasure_message(&entry.record_id, &details.scrubbed);
                if !signed(&self.key, &message, &details.signature) {
                    continue;
                }
                for (sequence, digest) in details.scrubbed {
                    if sequence < entry.sequence
                        && let Some(digest) = parse_hash(&digest)
                    {
                        self.scrubbed.insert(sequence, digest);
                    }
                }
            } else if let Ok(details) = serde_json::from_str::<RetentionDetails>(&payload.details)
                && signed(
                    &self.key,
                    &retention_message(&entry.record_id, &details.rules),
                    &details.signature,
                )
            {
                self.rules
                    .extend(details.rules.into_iter().map(|r| (entry.sequence, r)));
            }
        }
        Ok(())
    }

    /// Whether a recorded erasure left the payload of `entry` with `digest`.
    pub(crate) async fn accounts_for_scrub(
        &mut self,
        db: &Db,
        entry: &ChainEntry,
        digest: &Hash,
    ) -> Result<bool, AuditError> {
        if self.scrubbed.get(&entry.sequence) == Some(digest) {
            return Ok(true);
        }
        self.refresh(db).await?;
        Ok(self.scrubbed.get(&entry.sequence) == Some(digest))
    }

    /// Whether a recorded retention run removed the payload of `entry`.
    pub(crate) async fn accounts_for_removal(
        &mut self,
        db: &Db,
        entry: &ChainEntry,
    ) -> Result<bool, AuditError> {
        if self.removal_recorded(entry) {
            return Ok(true);
        }
        self.refresh(db).await?;
        Ok(self.removal_recorded(entry))
    }

    fn removal_recorded(&self, entry: &ChainEntry) -> bool {
        self.rules
            .iter()
            .any(|(at, rule)| *at > entry.sequence && rule.covers(entry))
    }
}
