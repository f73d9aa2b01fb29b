//! Retention and subject erasure: removing expired payloads and scrubbing one
//! person's data, each in the same transaction as the record of it (see
//! [`crate::coverage`] for how verification uses those records), and the per-team
//! retention overrides kept in the database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use godel_store::Db;
use godel_store::sea_orm::{ConnectionTrait, DatabaseTransaction};
use godel_types::{AuditRecordId, TeamId};

use crate::canonical::{Hash, Payload};
use crate::coverage::{
    DEFAULT_RULE, ERASURE_ACTION, ErasureDetails, POLICY_ACTION, RETENTION_ACTION,
    RetentionDetails, RetentionRule, erasure_message, retention_message,
};
use crate::error::AuditError;
use crate::log::AuditLog;
use crate::record::{Actor, ActorKind, Outcome};
use crate::store::{self, COLUMNS, FROM, Prepared, Sql, db_err, to_i64};

/// What replaces erased personal data in payloads.
pub(crate) const ERASED: &str = "[erased]";

/// Who asked for a retention run, an erasure or a policy change, and why; stored in
/// the record of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub actor: Actor,
    pub reason: String,
}

impl Requester {
    /// The audit service itself (its retention timer).
    pub fn service(reason: &str) -> Self {
        Self {
            actor: Actor {
                kind: ActorKind::Service,
                subject_id: crate::SERVICE.to_owned(),
                team_id: None,
                roles: Vec::new(),
            },
            reason: reason.to_owned(),
        }
    }

    fn is_service(&self) -> bool {
        self.actor.kind == ActorKind::Service && self.actor.subject_id == crate::SERVICE
    }
}

/// Where a team's retention period comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// `retention.teams` in the configuration.
    Config,
    /// Set through [`AuditLog::set_team_retention`]; overrides the configuration.
    Api,
}

/// One team's period in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamPolicy {
    pub team_id: TeamId,
    /// Zero: kept forever.
    pub period: Duration,
    pub source: PolicySource,
}

/// The retention periods in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Teams without their own period and records without a team (zero: forever).
    pub default_period: Duration,
    /// By team id.
    pub teams: Vec<TeamPolicy>,
    /// How often the service applies it (zero: never on its own).
    pub interval: Duration,
}

/// What one retention run removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub payloads_removed: u64,
    /// The `audit.retention` record of the run: `None` when a run of the service's
    /// own timer removed nothing.
    pub record: Option<AuditRecordId>,
}

/// What one subject erasure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureOutcome {
    /// Payloads that carried the subject and were scrubbed.
    pub records_scrubbed: u64,
    /// The `audit.erasure` record describing it.
    pub record: AuditRecordId,
}

impl AuditLog {
    /// The configured periods with the overrides stored in the database.
    pub async fn retention(&self) -> Result<RetentionPolicy, AuditError> {
        let config = self.retention_config();
        let mut teams: Vec<TeamPolicy> = config
            .teams
            .iter()
            .map(|t| TeamPolicy {
                team_id: t.team_id,
                period: t.period,
                source: PolicySource::Config,
            })
            .collect();
        for (team_id, period) in overrides(self.db()).await? {
            teams.retain(|t| t.team_id != team_id);
            teams.push(TeamPolicy {
                team_id,
                period,
                source: PolicySource::Api,
            });
        }
        teams.sort_by_key(|t| t.team_id.to_string());
        Ok(RetentionPolicy {
            default_period: config.period,
            teams,
            interval: config.interval,
        })
    }

    /// Sets `team_id`'s retention override (`None` removes it) and appends an
    /// `audit.retention_policy.set` record in the team, in one transaction.
    pub async fn set_team_retention(
        &self,
        team_id: TeamId,
        period: Option<Duration>,
        by: &Requester,
    ) -> Result<(RetentionPolicy, AuditRecordId), AuditError> {
        let now = Utc::now();
        let txn = store::begin_append(self.db()).await?;
        let team = team_id.to_string();
        let mut sql = Sql::new(txn.get_database_backend(), "");
        match period {
            Some(period) => {
                let secs = i64::try_from(period.as_secs()).map_err(|_| AuditError::Invalid {
                    field: "period".to_owned(),
                    reason: "is too long".to_owned(),
                })?;
                sql.push("INSERT INTO audit_team_retention (team_id, period_secs, updated_at) VALUES (")
                    .bind(team.clone())
                    .push(", ")
                    .bind(secs)
                    .push(", ")
                    .bind(now.timestamp_nanos_opt().unwrap_or(i64::MAX))
                    .push(") ON CONFLICT (team_id) DO UPDATE SET period_secs = excluded.period_secs, updated_at = excluded.updated_at");
            }
            None => {
                sql.push("DELETE FROM audit_team_retention WHERE team_id = ")
                    .bind(team.clone());
            }
        }
        txn.execute_raw(sql.build())
            .await
            .map_err(db_err("setting a team's retention"))?;
        let details = serde_json::json!({
            "reason": self.redactor().text(&by.reason).text,
            "team": team,
            "period_secs": period.map(|p| p.as_secs()),
        });
        let id = self
            .append_own_in(
                &txn,
                AuditRecordId::new(),
                POLICY_ACTION,
                now,
                Some(team_id),
                by,
                details,
            )
            .await?;
        txn.commit()
            .await
            .map_err(db_err("committing a retention change"))?;
        self.after_own_append().await;
        Ok((self.retention().await?, id))
    }

    /// Removes the payloads of records older than their team's period as of `now`
    /// (their chain entries stay), and appends an `audit.retention` record listing
    /// the rules applied, in one transaction. The service's own timer records only
    /// runs that removed something; a run anyone else asks for is always recorded.
    pub async fn apply_retention(
        &self,
        now: DateTime<Utc>,
        by: &Requester,
    ) -> Result<RetentionOutcome, AuditError> {
        let policy = self.retention().await?;
        let cutoff = |period: Duration| -> Option<i64> {
            if period.is_zero() {
                return None;
            }
            let period = chrono::Duration::from_std(period).ok()?;
            now.checked_sub_signed(period)?.timestamp_nanos_opt()
        };
        let overridden: Vec<String> = policy.teams.iter().map(|t| t.team_id.to_string()).collect();
        let txn = store::begin_append(self.db()).await?;
        let mut removed = 0u64;
        let mut rules = Vec::new();
        for team in &policy.teams {
            let Some(before) = cutoff(team.period) else {
                continue;
            };
            let team = team.team_id.to_string();
            let n = remove_payloads(&txn, Some(&team), &[], before).await?;
            removed += n;
            rules.push(RetentionRule {
                team,
                except: Vec::new(),
                before_ns: before,
                removed: n,
            });
        }
        if let Some(before) = cutoff(policy.default_period) {
            let n = remove_payloads(&txn, None, &overridden, before).await?;
            removed += n;
            rules.push(RetentionRule {
                team: DEFAULT_RULE.to_owned(),
                except: overridden,
                before_ns: before,
                removed: n,
            });
        }
        if removed == 0 && by.is_service() {
            return Ok(RetentionOutcome::default());
        }
        let id = AuditRecordId::new();
        let signature = self
            .checkpointer()
            .sign(&retention_message(&id.to_string(), &rules));
        let details = RetentionDetails {
            reason: self.redactor().text(&by.reason).text,
            payloads_removed: removed,
            rules,
            signature: hex::encode(signature),
        };
        let details = serde_json::to_value(details).map_err(json_err)?;
        let record = self
            .append_own_in(&txn, id, RETENTION_ACTION, now, None, by, details)
            .await?;
        txn.commit()
            .await
            .map_err(db_err("committing a retention run"))?;
        self.after_own_append().await;
        Ok(RetentionOutcome {
            payloads_removed: removed,
            record: Some(record),
        })
    }

    /// Removes `subject_id`'s personal data (as stored: ids are kept as written,
    /// redacted values as their pseudonyms) from every payload — as actor, in the
    /// resource and in the details — replacing it with `[erased]`, and appends an
    /// `audit.erasure` record listing each scrubbed record with the digest of what
    /// remains (never the subject), in one transaction.
    pub async fn erase_subject(
        &self,
        subject_id: &str,
        by: &Requester,
    ) -> Result<ErasureOutcome, AuditError> {
        if subject_id.trim().is_empty() {
            return Err(AuditError::Invalid {
                field: "subject_id".to_owned(),
                reason: "must not be empty".to_owned(),
            });
        }
        let stored = self.redactor().text(subject_id).text;
        let txn = store::begin_append(self.db()).await?;
        let scrubbed = scrub_subject(&txn, &stored).await?;
        let id = AuditRecordId::new();
        let listed: Vec<(u64, String)> =
            scrubbed.iter().map(|(s, d)| (*s, hex::encode(d))).collect();
        let signature = self
            .checkpointer()
            .sign(&erasure_message(&id.to_string(), &listed));
        let details = ErasureDetails {
            reason: self.redactor().text(&by.reason).text,
            records_scrubbed: scrubbed.len() as u64,
            scrubbed: listed,
            signature: hex::encode(signature),
        };
        let details = serde_json::to_value(details).map_err(json_err)?;
        let record = self
            .append_own_in(&txn, id, ERASURE_ACTION, Utc::now(), None, by, details)
            .await?;
        txn.commit()
            .await
            .map_err(db_err("committing an erasure"))?;
        self.after_own_append().await;
        Ok(ErasureOutcome {
            records_scrubbed: scrubbed.len() as u64,
            record,
        })
    }

    /// Appends a record of the service's own action inside `txn` (not redacted: the
    /// details carry counts, sequences and digests; the reason is redacted by the
    /// caller).
    #[allow(clippy::too_many_arguments)] // one record's fields
    async fn append_own_in(
        &self,
        txn: &DatabaseTransaction,
        id: AuditRecordId,
        action: &str,
        at: DateTime<Utc>,
        team_id: Option<TeamId>,
        by: &Requester,
        details: serde_json::Value,
    ) -> Result<AuditRecordId, AuditError> {
        let actor_id = self.redactor().text(&by.actor.subject_id);
        let prepared = Prepared {
            record_id: id.to_string(),
            occurred_at_ns: at.timestamp_nanos_opt().unwrap_or(i64::MAX),
            team_id: team_id.map(|t| t.to_string()).unwrap_or_default(),
            payload: Payload {
                actor_kind: by.actor.kind.number(),
                actor_id: actor_id.text,
                actor_team_id: by.actor.team_id.map(|t| t.to_string()).unwrap_or_default(),
                actor_roles: by.actor.roles.clone(),
                action: action.to_owned(),
                resource: String::new(),
                outcome: Outcome::Success.number(),
                trace_id: String::new(),
                client_ip: String::new(),
                details: details.to_string(),
                redacted: actor_id.changed,
            },
        };
        store::append_in(txn, vec![prepared]).await?;
        Ok(id)
    }

    /// Writes a checkpoint when one is due after an own record was committed.
    async fn after_own_append(&self) {
        let head = match store::head(self.db()).await {
            Ok((head, _)) => head,
            Err(err) => {
                tracing::warn!(error = %err, "reading the audit chain head failed");
                return;
            }
        };
        if let Err(err) = self.checkpointer().after_append(self.db(), head).await {
            tracing::warn!(error = %err, "writing an audit checkpoint failed");
        }
    }
}

fn json_err(e: serde_json::Error) -> AuditError {
    AuditError::Invalid {
        field: "details".to_owned(),
        reason: e.to_string(),
    }
}

/// The retention overrides stored in the database.
async fn overrides(db: &Db) -> Result<Vec<(TeamId, Duration)>, AuditError> {
    let conn = db.conn();
    let sql = Sql::new(
        conn.get_database_backend(),
        "SELECT team_id, period_secs FROM audit_team_retention ORDER BY team_id",
    );
    let rows = conn
        .query_all_raw(sql.build())
        .await
        .map_err(db_err("reading retention overrides"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let team: String = row
            .try_get("", "team_id")
            .map_err(db_err("reading retention overrides"))?;
        let secs: i64 = row
            .try_get("", "period_secs")
            .map_err(db_err("reading retention overrides"))?;
        let Ok(team) = team.parse::<TeamId>() else {
            tracing::warn!(
                team,
                "ignoring a retention override with an invalid team id"
            );
            continue;
        };
        out.push((team, Duration::from_secs(u64::try_from(secs).unwrap_or(0))));
    }
    Ok(out)
}

/// Appends the condition that keeps the records of retention runs and erasures
/// (which verification relies on) out of removal and scrubbing.
fn not_own_record(sql: &mut Sql) {
    sql.push(" AND action NOT IN (")
        .bind(ERASURE_ACTION)
        .push(", ")
        .bind(RETENTION_ACTION)
        .push(")");
}

/// Removes the payloads of `team`'s records (or, with `None`, of every team not in
/// `except`, records without a team included) that occurred before `cutoff_ns`;
/// returns how many were removed.
async fn remove_payloads(
    txn: &DatabaseTransaction,
    team: Option<&str>,
    except: &[String],
    cutoff_ns: i64,
) -> Result<u64, AuditError> {
    let mut sql = Sql::new(
        txn.get_database_backend(),
        "DELETE FROM audit_payload WHERE sequence IN \
         (SELECT sequence FROM audit_chain WHERE occurred_at < ",
    );
    sql.bind(cutoff_ns);
    if let Some(team) = team {
        sql.push(" AND team_id = ").bind(team.to_owned());
    } else if !except.is_empty() {
        sql.push(" AND team_id NOT IN (");
        for (i, team) in except.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(team.clone());
        }
        sql.push(")");
    }
    sql.push(")");
    not_own_record(&mut sql);
    txn.execute_raw(sql.build())
        .await
        .map(|r| r.rows_affected())
        .map_err(db_err("removing expired payloads"))
}

/// Replaces `stored` (a subject id as stored) in every payload's actor, resource and
/// details with [`ERASED`] and marks those payloads erased; returns each scrubbed
/// sequence with the digest of its payload afterwards.
async fn scrub_subject(
    txn: &DatabaseTransaction,
    stored: &str,
) -> Result<Vec<(u64, Hash)>, AuditError> {
    let backend = txn.get_database_backend();
    let pattern = format!(
        "%{}%",
        stored
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let matches = |sql: &mut Sql| {
        sql.push(" WHERE (actor_id = ")
            .bind(stored.to_owned())
            .push(" OR resource LIKE ")
            .bind(pattern.clone())
            .push(" ESCAPE '\\' OR details LIKE ")
            .bind(pattern.clone())
            .push(" ESCAPE '\\')");
        not_own_record(sql);
    };
    let mut find = Sql::new(backend, "SELECT sequence FROM audit_payload");
    matches(&mut find);
    let rows = txn
        .query_all_raw(find.build())
        .await
        .map_err(db_err("finding a subject's records"))?;
    let mut sequences = Vec::with_capacity(rows.len());
    for row in rows {
        let s: i64 = row
            .try_get("", "sequence")
            .map_err(db_err("finding a subject's records"))?;
        sequences.push(u64::try_from(s).unwrap_or(0));
    }
    sequences.sort_unstable();

    let mut update = Sql::new(
        backend,
        "UPDATE audit_payload SET actor_id = CASE WHEN actor_id = ",
    );
    update
        .bind(stored.to_owned())
        .push(" THEN ")
        .bind(ERASED)
        .push(" ELSE actor_id END, resource = replace(resource, ")
        .bind(stored.to_owned())
        .push(", ")
        .bind(ERASED)
        .push("), details = replace(details, ")
        .bind(stored.to_owned())
        .push(", ")
        .bind(ERASED)
        .push("), erased = ")
        .bind(true);
    matches(&mut update);
    txn.execute_raw(update.build())
        .await
        .map_err(db_err("erasing a subject's data"))?;

    // The digests of what remains, read back as stored.
    let mut out = Vec::with_capacity(sequences.len());
    for chunk in sequences.chunks(500) {
        let mut read = Sql::new(backend, "SELECT ");
        read.push(COLUMNS).push(FROM).push(" WHERE c.sequence IN (");
        for (i, s) in chunk.iter().enumerate() {
            if i > 0 {
                read.push(", ");
            }
            read.bind(to_i64(*s));
        }
        read.push(") ORDER BY c.sequence");
        let rows = txn
            .query_all_raw(read.build())
            .await
            .map_err(db_err("reading scrubbed records"))?;
        for row in &rows {
            if let (entry, Some(payload)) = store::decode(row)? {
                out.push((entry.sequence, payload.digest()));
            }
        }
    }
    Ok(out)
}
