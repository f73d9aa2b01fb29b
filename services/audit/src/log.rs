//! [`AuditLog`]: the audit log's operations — append (redacted, chained), query,
//! export pages, verify and checkpoint — over the service's database (retention
//! and erasure are in [`crate::retention`]).

use chrono::{DateTime, Utc};
use godel_store::Db;
use godel_types::{AuditRecordId, TeamId};

use crate::coverage::RESERVED_PREFIX;

use crate::canonical::Payload;
use crate::checkpoint::{Checkpoint, Checkpointer};
use crate::config::{AuditConfig, RetentionConfig};
use crate::error::AuditError;
use crate::keys;
use crate::record::{Actor, ActorKind, NewRecord, Outcome, Record, RecordBody};
use crate::redact::Redactor;
use crate::store::{self, AppendOutcome, Filter, Order, Prepared, Row};
use crate::verify::{self, VerifyReport};

/// Most records one append takes.
pub const MAX_BATCH: usize = 1000;
/// Most records one query page returns.
pub const MAX_PAGE: u32 = 1000;
/// Records per query page when the caller does not say.
pub const DEFAULT_PAGE: u32 = 100;

/// The audit log of one service database.
pub struct AuditLog {
    db: Db,
    redactor: Redactor,
    checkpointer: Checkpointer,
    retention: RetentionConfig,
}

impl AuditLog {
    /// Loads (or creates) the pseudonym and signing keys and builds the redaction
    /// rules. The database must be migrated with [`crate::Migrator`].
    pub fn open(db: Db, config: &AuditConfig) -> Result<Self, AuditError> {
        let key = match &config.redaction.key {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            None => keys::load_or_create(&config.redaction.key_file)
                .map_err(|source| AuditError::Key {
                    purpose: "pseudonym",
                    source,
                })?
                .to_vec(),
        };
        Ok(Self {
            db,
            redactor: Redactor::new(key, &config.redaction)?,
            checkpointer: Checkpointer::open(&config.checkpoint)?,
            retention: config.retention.clone(),
        })
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The configured retention (without the overrides stored in the database; see
    /// [`AuditLog::retention`]).
    pub fn retention_config(&self) -> &RetentionConfig {
        &self.retention
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub fn checkpointer(&self) -> &Checkpointer {
        &self.checkpointer
    }

    /// Redacts and appends `records` in one transaction, idempotent by record id;
    /// writes a checkpoint when `checkpoint.every_records` were crossed.
    ///
    /// Redacted: the actor's subject id, `resource`, `details_json` (string values and
    /// secret-named keys) and `client_ip` (when IP redaction is on). Ids, `action`,
    /// roles and `trace_id` are structural and validated instead.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<AppendOutcome, AuditError> {
        if records.len() > MAX_BATCH {
            return Err(AuditError::Invalid {
                field: "records".to_owned(),
                reason: format!(
                    "at most {MAX_BATCH} records per append, got {}",
                    records.len()
                ),
            });
        }
        let batch = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| self.prepare(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        if batch.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let outcome = store::append(&self.db, batch).await?;
        if outcome.appended > 0
            && let Err(err) = self.checkpointer.after_append(&self.db, outcome.head).await
        {
            // The records are committed; the timer writes the checkpoint later.
            tracing::warn!(error = %err, "writing an audit checkpoint failed");
        }
        Ok(outcome)
    }

    fn prepare(&self, i: usize, r: NewRecord) -> Result<Prepared, AuditError> {
        let invalid = |field: &str, reason: &str| AuditError::Invalid {
            field: format!("records[{i}].{field}"),
            reason: reason.to_owned(),
        };
        let occurred_at_ns = r
            .occurred_at
            .timestamp_nanos_opt()
            .ok_or_else(|| invalid("occurred_at", "must be between the years 1678 and 2261"))?;
        let body = r.body;
        if body.action.starts_with(RESERVED_PREFIX) {
            return Err(invalid(
                "action",
                "actions starting with `audit.` are written only by the audit service",
            ));
        }
        let trace_ok = body.trace_id.is_empty()
            || (body.trace_id.len() == 32 && body.trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
        if !trace_ok {
            return Err(invalid("trace_id", "must be 32 hex digits"));
        }
        if !body.details_json.is_empty()
            && serde_json::from_str::<serde_json::Value>(&body.details_json).is_err()
        {
            return Err(invalid("details_json", "must be JSON"));
        }
        let actor_id = self.redactor.text(&body.actor.subject_id);
        let resource = self.redactor.text(&body.resource);
        let client_ip = self.redactor.client_ip(&body.client_ip);
        let details = self.redactor.details(&body.details_json);
        let redacted = actor_id.changed || resource.changed || client_ip.changed || details.changed;
        Ok(Prepared {
            record_id: r.id.to_string(),
            occurred_at_ns,
            team_id: r.team_id.map(|t| t.to_string()).unwrap_or_default(),
            payload: Payload {
                actor_kind: body.actor.kind.number(),
                actor_id: actor_id.text,
                actor_team_id: body
                    .actor
                    .team_id
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                actor_roles: body.actor.roles,
                action: body.action,
                resource: resource.text,
                outcome: body.outcome.number(),
                trace_id: body.trace_id.to_ascii_lowercase(),
                client_ip: client_ip.text,
                details: details.text,
                redacted,
            },
        })
    }

    /// Records matching `filter`, newest first: up to `page_size` (0: the default,
    /// capped at [`MAX_PAGE`]) older than the `before` sequence. Returns the page and
    /// the cursor for the next one (`None` on the last page).
    pub async fn query(
        &self,
        filter: &Filter,
        page_size: u32,
        before: Option<u64>,
    ) -> Result<(Vec<Record>, Option<u64>), AuditError> {
        let size = match page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let rows = store::query(
            &self.db,
            filter,
            before,
            Order::NewestFirst,
            u64::from(size) + 1,
        )
        .await?;
        let more = rows.len() > size as usize;
        let records = rows
            .iter()
            .take(size as usize)
            .map(|r| store::decode(r).and_then(to_record))
            .collect::<Result<Vec<_>, _>>()?;
        let next = more.then(|| records.last().map(|r| r.sequence)).flatten();
        Ok((records, next))
    }

    /// Up to `limit` records matching `filter` after the `after` sequence, oldest
    /// first (for export).
    pub async fn export_page(
        &self,
        filter: &Filter,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Record>, AuditError> {
        store::query(
            &self.db,
            filter,
            after,
            Order::OldestFirst,
            u64::from(limit),
        )
        .await?
        .iter()
        .map(|r| store::decode(r).and_then(to_record))
        .collect()
    }

    /// Verifies sequences `from..=to` (0: from the start / to the end) against the
    /// chain and the checkpoints.
    pub async fn verify(&self, from: u64, to: u64) -> Result<VerifyReport, AuditError> {
        verify::verify(
            &self.db,
            self.checkpointer.dir(),
            &self.checkpointer.verifying_key(),
            from,
            to,
        )
        .await
    }

    /// Writes a checkpoint of the current head unless the last one covers it.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        self.checkpointer.write(&self.db).await
    }
}

/// The typed record a stored row holds; ids that no longer parse are corruption.
fn to_record((entry, payload): Row) -> Result<Record, AuditError> {
    let sequence = entry.sequence;
    let corrupt = |reason: String| AuditError::Corrupt { sequence, reason };
    let team = |s: &str| -> Result<Option<TeamId>, AuditError> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|e| corrupt(format!("team id: {e}")))
    };
    let body = match payload {
        Some(p) => Some(RecordBody {
            actor: Actor {
                kind: ActorKind::from_number(p.actor_kind),
                subject_id: p.actor_id,
                team_id: team(&p.actor_team_id)?,
                roles: p.actor_roles,
            },
            action: p.action,
            resource: p.resource,
            outcome: Outcome::from_number(p.outcome),
            trace_id: p.trace_id,
            client_ip: p.client_ip,
            details_json: p.details,
        }),
        None => None,
    };
    Ok(Record {
        sequence,
        id: entry
            .record_id
            .parse::<AuditRecordId>()
            .map_err(|e| corrupt(format!("record id: {e}")))?,
        occurred_at: DateTime::<Utc>::from_timestamp_nanos(entry.occurred_at_ns),
        team_id: team(&entry.team_id)?,
        body,
        prev_hash: entry.prev_hash,
        hash: entry.hash,
    })
}
