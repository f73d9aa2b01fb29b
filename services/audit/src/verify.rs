//! Verification: walks the chain in sequence order, a page at a time, recomputing
//! every hash and comparing the chain with the signed checkpoints.
//!
//! The first damage found is reported with its position and kind:
//!
//! - **modified**: an entry's fields (or its payload, while present) no longer hash
//!   to what the chain stored;
//! - **deleted**: a sequence number is missing, or an entry links to one several
//!   positions back (records removed and the rest renumbered);
//! - **reordered**: an entry links to a record that now sits after it;
//! - **inserted**: an entry links past its predecessor to the record before it, so
//!   the predecessor was inserted;
//! - **replaced**: an intact entry links to a hash no stored record has, so its
//!   predecessor was replaced by one with a different hash;
//! - **truncated**: the chain ends before the last checkpoint's sequence;
//! - **checkpoint mismatch**: the chain's hash at a checkpoint's sequence differs
//!   from the signed one, or a checkpoint file's signature does not verify;
//! - **unrecorded erasure**: a payload is gone, or marked `erased`, but no recorded
//!   retention run or erasure accounts for it ([`crate::coverage`]).
//!
//! Payloads removed by a recorded retention run, or scrubbed by a recorded subject
//! erasure (to exactly the digest that erasure listed), cannot be checked against
//! their original digest; they are counted in [`VerifyReport::erased_payloads`]
//! and the chain around them still verifies.
//!
//! Records appended after the last checkpoint and then removed leave no trace: that
//! window is what `checkpoint.every_records` and `checkpoint.interval` bound.

use godel_proto::audit::v1::Damage;

use crate::canonical::{ChainEntry, GENESIS, Hash};
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use godel_store::DatabaseConfig;

use crate::checkpoint;
use crate::coverage::{self, Coverage};
use crate::error::AuditError;
use crate::store;
use godel_store::Db;

/// Entries read per page.
const PAGE: u64 = 1000;

/// The kind of damage verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    Modified,
    Deleted,
    Reordered,
    Inserted,
    Replaced,
    Truncated,
    CheckpointMismatch,
    /// A payload removed, or marked erased, that no recorded retention run or
    /// erasure accounts for.
    UnrecordedErasure,
}

impl DamageKind {
    /// The proto's coarser classification.
    pub fn to_proto(self) -> Damage {
        match self {
            Self::Modified => Damage::HashMismatch,
            Self::Deleted => Damage::MissingRecord,
            Self::Reordered | Self::Inserted | Self::Replaced => Damage::BrokenLink,
            Self::Truncated | Self::CheckpointMismatch => Damage::CheckpointMismatch,
            Self::UnrecordedErasure => Damage::UnrecordedErasure,
        }
    }

    /// The name the API and the CLI show.
    pub fn name(self) -> &'static str {
        match self {
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::Reordered => "reordered",
            Self::Inserted => "inserted",
            Self::Replaced => "replaced",
            Self::Truncated => "truncated",
            Self::CheckpointMismatch => "checkpoint_mismatch",
            Self::UnrecordedErasure => "unrecorded_erasure",
        }
    }
}

/// The first damage found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    pub sequence: u64,
    pub kind: DamageKind,
    /// For people.
    pub detail: String,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Entries checked before the first damage (or all of them).
    pub records_checked: u64,
    /// Entries whose payload was removed or scrubbed by an erasure (their digest
    /// cannot be checked).
    pub erased_payloads: u64,
    /// Checkpoints whose head hash matched the chain.
    pub checkpoints_matched: u64,
    /// `None` when everything checked is intact.
    pub damage: Option<Damaged>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.damage.is_none()
    }
}

/// Verifies an audit database without the service (for reviews): opens the
/// database as configured (without migrating it) and checks the checkpoints in
/// `checkpoint_dir` with the public key in `public_key_file` (the hex
/// `<signing key>.pub` the service writes). Needs neither the signing key nor the
/// pseudonym key.
pub async fn verify_offline(
    database: &DatabaseConfig,
    checkpoint_dir: &Path,
    public_key_file: &Path,
    from: u64,
    to: u64,
) -> Result<VerifyReport, AuditError> {
    let key = crate::keys::read_public_key(public_key_file).map_err(|source| AuditError::Key {
        purpose: "checkpoint verifying",
        source,
    })?;
    if !tokio::fs::try_exists(checkpoint_dir).await.unwrap_or(false) {
        return Err(AuditError::CheckpointIo {
            path: checkpoint_dir.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the checkpoint directory does not exist",
            ),
        });
    }
    let db = godel_store::connect(database)
        .await
        .map_err(AuditError::Connect)?;
    let report = verify(&db, checkpoint_dir, &key, from, to).await;
    db.close().await.map_err(AuditError::Connect)?;
    report
}

fn damaged(sequence: u64, kind: DamageKind, detail: String) -> Damaged {
    Damaged {
        sequence,
        kind,
        detail,
    }
}

/// Verifies sequences `from..=to` (0: from the start / to the end) against the
/// checkpoints in `checkpoint_dir`, whose signatures are checked with `key`.
pub(crate) async fn verify(
    db: &Db,
    checkpoint_dir: &Path,
    key: &VerifyingKey,
    from: u64,
    to: u64,
) -> Result<VerifyReport, AuditError> {
    let mut report = walk(db, checkpoint_dir, key, from, to).await?;
    // Only records before the first damaged one count as checked (an inserted record
    // is found one position after it).
    if let Some(d) = &report.damage {
        report.records_checked = report
            .records_checked
            .min(d.sequence.saturating_sub(from.max(1)));
    }
    Ok(report)
}

async fn walk(
    db: &Db,
    checkpoint_dir: &Path,
    key: &VerifyingKey,
    from: u64,
    to: u64,
) -> Result<VerifyReport, AuditError> {
    let checkpoints = checkpoint::load(checkpoint_dir, key).await?;
    let mut coverage = Coverage::load(db, key).await?;
    let start = from.max(1);
    let to = (to != 0).then_some(to);
    let mut report = VerifyReport::default();

    // The entry before the range, trusted as the starting link.
    let mut prev: Option<ChainEntry> = None;
    if start > 1 {
        let rows = store::chain_page(db, start - 2, Some(start - 1), 1).await?;
        match rows.first().map(store::decode) {
            Some(Ok((entry, _))) => prev = Some(entry),
            Some(Err(AuditError::Corrupt { sequence, reason })) => {
                report.damage = Some(damaged(sequence, DamageKind::Modified, reason));
                return Ok(report);
            }
            Some(Err(e)) => return Err(e),
            None => {
                report.damage = Some(damaged(
                    start - 1,
                    DamageKind::Deleted,
                    format!("record {} is missing", start - 1),
                ));
                return Ok(report);
            }
        }
    }

    let mut expected = start;
    // The next page is read while this one is checked.
    let mut next = Some(read_page(db, start - 1, to));
    'pages: loop {
        let Some(reading) = next.take() else {
            break 'pages;
        };
        let rows = reading.await.map_err(|e| AuditError::Db {
            operation: "reading the chain",
            source: godel_store::sea_orm::DbErr::Custom(e.to_string()),
        })??;
        let full = rows.len() as u64 == PAGE;
        if full
            && let Some(last) = rows.last()
            && let Ok(last) = last.try_get::<i64>("", "sequence")
        {
            next = Some(read_page(db, u64::try_from(last).unwrap_or(0), to));
        }
        for row in &rows {
            let (entry, payload) = match store::decode(row) {
                Ok(decoded) => decoded,
                Err(AuditError::Corrupt { sequence, reason }) => {
                    report.damage = Some(damaged(sequence, DamageKind::Modified, reason));
                    return Ok(report);
                }
                Err(e) => return Err(e),
            };
            if let Some(d) = check_entry(db, &entry, prev.as_ref(), expected).await? {
                report.damage = Some(d);
                return Ok(report);
            }
            let s = entry.sequence;
            match payload {
                Some(p) if coverage::marked_erased(row) => {
                    if !coverage.accounts_for_scrub(db, &entry, &p.digest()).await? {
                        report.damage = Some(damaged(
                            s,
                            DamageKind::UnrecordedErasure,
                            format!(
                                "record {s} is marked erased but no recorded erasure left its payload as it is"
                            ),
                        ));
                        return Ok(report);
                    }
                    report.erased_payloads += 1;
                }
                Some(p) if p.digest() != entry.payload_digest => {
                    report.damage = Some(damaged(
                        s,
                        DamageKind::Modified,
                        format!("the payload of record {s} no longer matches its digest"),
                    ));
                    return Ok(report);
                }
                Some(_) => {}
                None => {
                    if !coverage.accounts_for_removal(db, &entry).await? {
                        report.damage = Some(damaged(
                            s,
                            DamageKind::UnrecordedErasure,
                            format!(
                                "the payload of record {s} is gone but no recorded retention run removed it"
                            ),
                        ));
                        return Ok(report);
                    }
                    report.erased_payloads += 1;
                }
            }
            match checkpoints.get(&entry.sequence) {
                Some(Ok(head)) if *head == entry.hash => report.checkpoints_matched += 1,
                Some(Ok(head)) => {
                    report.damage = Some(damaged(
                        entry.sequence,
                        DamageKind::CheckpointMismatch,
                        format!(
                            "record {} hashes to {} but the signed checkpoint says {}",
                            entry.sequence,
                            hex::encode(entry.hash),
                            hex::encode(head)
                        ),
                    ));
                    return Ok(report);
                }
                Some(Err(reason)) => {
                    report.damage = Some(damaged(
                        entry.sequence,
                        DamageKind::CheckpointMismatch,
                        reason.clone(),
                    ));
                    return Ok(report);
                }
                None => {}
            }
            report.records_checked += 1;
            expected = entry.sequence + 1;
            prev = Some(entry);
        }
    }

    let last = expected - 1;
    let beyond = checkpoints
        .range(last + 1..)
        .find(|(seq, _)| to.is_none_or(|to| **seq <= to));
    if let Some((seq, _)) = beyond {
        report.damage = Some(damaged(
            last + 1,
            DamageKind::Truncated,
            format!("the chain ends at record {last} but checkpoint {seq} was signed after it"),
        ));
    }
    Ok(report)
}

/// Reads the page after `after` on its own task.
fn read_page(
    db: &Db,
    after: u64,
    to: Option<u64>,
) -> tokio::task::JoinHandle<Result<Vec<godel_store::sea_orm::QueryResult>, AuditError>> {
    let db = db.clone();
    tokio::spawn(async move { store::chain_page(&db, after, to, PAGE).await })
}

/// Checks one entry's position, link and hash.
async fn check_entry(
    db: &Db,
    entry: &ChainEntry,
    prev: Option<&ChainEntry>,
    expected: u64,
) -> Result<Option<Damaged>, AuditError> {
    let s = entry.sequence;
    if s != expected {
        return Ok(Some(damaged(
            expected,
            DamageKind::Deleted,
            format!("records {expected}..{} are missing", s - 1),
        )));
    }
    let expected_prev: Hash = prev.map_or(GENESIS, |p| p.hash);
    if entry.prev_hash != expected_prev {
        return classify_broken_link(db, entry, prev).await.map(Some);
    }
    if entry.recompute() != entry.hash {
        return Ok(Some(damaged(
            s,
            DamageKind::Modified,
            format!("record {s} no longer hashes to its stored hash"),
        )));
    }
    Ok(None)
}

/// `entry` does not link to `prev`: works out what happened.
async fn classify_broken_link(
    db: &Db,
    entry: &ChainEntry,
    prev: Option<&ChainEntry>,
) -> Result<Damaged, AuditError> {
    let s = entry.sequence;
    if let Some(p) = prev
        && entry.prev_hash == p.prev_hash
    {
        return Ok(damaged(
            p.sequence,
            DamageKind::Inserted,
            format!(
                "record {} was inserted: record {s} links to the record before it",
                p.sequence
            ),
        ));
    }
    match store::sequence_of_hash(db, &entry.prev_hash).await? {
        Some(x) if x > s => Ok(damaged(
            s,
            DamageKind::Reordered,
            format!("record {s} links to record {x}, which now comes after it"),
        )),
        Some(x) if x + 1 < s => Ok(damaged(
            x + 1,
            DamageKind::Deleted,
            format!(
                "record {s} links to record {x}: the records between were removed and the rest renumbered"
            ),
        )),
        _ if prev.is_some() && entry.recompute() == entry.hash => Ok(damaged(
            s - 1,
            DamageKind::Replaced,
            format!(
                "record {s} is intact but links to a record other than {}",
                s - 1
            ),
        )),
        _ => Ok(damaged(
            s,
            DamageKind::Modified,
            format!("record {s} does not link to the record before it"),
        )),
    }
}
