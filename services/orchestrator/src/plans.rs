//! Plans run as one unit: every task of a plan works on top of the plan's
//! integration branch `godel/plan-<plan-id>` and, once its agent succeeded (and the
//! quality gate passed), is merged onto it; a plan that failed or was cancelled is
//! rolled back by resetting that branch to the commit the plan started from.
//!
//! A plan task's payload carries `"plan": {"base": "<commit>", "run_gate": true}`;
//! intake adds `plan.id` from the scheduler task's plan id. [`Integrations`] records
//! each plan's integration in the orchestrator's database (`plan_integrations`), so
//! rollback and reads work after a restart, and publishes `plan.integrated` and
//! `plan.rolled_back` through the outbox. [`PlanControl`] rolls a plan back as a
//! whole: cancels it at the scheduler (on demand), stops its sessions here, resets
//! the branch. Only `godel/plan-…` refs are written; the user's branches never.

mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use godel_backend::cloud_event;
use godel_bus::Subject;
use godel_error::{Error, ErrorCode};
use godel_proto::events::v1::PlanIntegrationEvent;
use godel_store::sea_orm::TransactionTrait;
use godel_store::{Db, OutboxEvent, RelayNotifier};
use godel_types::{OrchestratorId, PlanId, TaskId, TeamId};
use serde::Deserialize;

use crate::runtime::worktree::integrate::{self, Merge};
use crate::session::EVENT_SOURCE;

pub use store::{IntegrationState, PlanIntegration};

/// The plan a task belongs to, as its payload's `plan` object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSpec {
    pub id: PlanId,
    /// The commit the plan started from.
    pub base: String,
    /// Whether the quality gate runs before the task's work is merged.
    pub run_gate: bool,
}

/// Other keys (set by whoever planned the task) are ignored.
#[derive(Debug, Deserialize)]
struct PlanField {
    id: Option<String>,
    base: String,
    #[serde(default)]
    run_gate: bool,
}

impl PlanSpec {
    /// The plan `payload` names; `None` for a standalone task (no `plan`, or a `plan`
    /// without the `id` intake adds). A malformed `plan` is `invalid_argument`.
    pub fn of_payload(payload: &serde_json::Value) -> Result<Option<Self>, Error> {
        let Some(plan) = payload.get("plan") else {
            return Ok(None);
        };
        let field: PlanField = serde_json::from_value(plan.clone()).map_err(|e| {
            Error::invalid_argument("payload_json", format!("`plan` is not a plan: {e}"))
        })?;
        let Some(id) = field.id else { return Ok(None) };
        let id = id.parse::<PlanId>().map_err(|_| {
            Error::invalid_argument("payload_json", format!("`plan.id` `{id}` is not a plan id"))
        })?;
        let hex = field.base.len() == 40 && field.base.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return Err(Error::invalid_argument(
                "payload_json",
                format!(
                    "`plan.base` must be a 40-hex commit id, got `{}`",
                    field.base
                ),
            ));
        }
        Ok(Some(Self {
            id,
            base: field.base,
            run_gate: field.run_gate,
        }))
    }
}

/// The plans' integration branches and their records. Cheap to clone.
#[derive(Clone)]
pub struct Integrations {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    notifier: RelayNotifier,
    orchestrator_id: OrchestratorId,
    /// One lock per plan: a merge and a rollback of one plan never interleave here.
    locks: Mutex<HashMap<PlanId, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Integrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integrations").finish_non_exhaustive()
    }
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    /// False when the integration was already rolled back before the call.
    pub rolled_back: bool,
    pub integration: PlanIntegration,
}

impl Integrations {
    pub fn new(db: Db, notifier: RelayNotifier, orchestrator_id: OrchestratorId) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                notifier,
                orchestrator_id,
                locks: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock(&self, plan: PlanId) -> Arc<tokio::sync::Mutex<()>> {
        match self.inner.locks.lock() {
            Ok(mut locks) => locks.entry(plan).or_default().clone(),
            Err(poisoned) => poisoned.into_inner().entry(plan).or_default().clone(),
        }
    }

    /// Opens `plan`'s integration in `repo` (the local repository or cached clone of
    /// `repository_url`) for a task of `team`: creates the branch at the plan's base
    /// unless it exists (safe when sessions race) and records it. Returns the branch's
    /// head, the commit the task starts from. `failed_precondition` when the plan was
    /// rolled back; `not_found` when another team's plan has this id.
    pub async fn open(
        &self,
        team: TeamId,
        plan: &PlanSpec,
        repository_url: &str,
        repo: &Path,
    ) -> Result<String, Error> {
        let lock = self.lock(plan.id);
        let _guard = lock.lock().await;
        if let Some(existing) = store::load(self.inner.db.conn(), plan.id).await? {
            check_open(&existing, team)?;
        }
        let head = integrate::start(repo, plan.id, &plan.base)
            .await
            .map_err(|e| git_err("creating the plan's integration branch", &e))?;
        let now = Utc::now();
        let record = PlanIntegration {
            plan_id: plan.id,
            team_id: team,
            repository_url: repository_url.to_owned(),
            repo_path: repo.to_path_buf(),
            branch: integrate::integration_branch(plan.id),
            base_commit: plan.base.clone(),
            head_commit: head.clone(),
            state: IntegrationState::Open,
            merged_task_ids: Vec::new(),
            reason: None,
            created_at: now,
            updated_at: now,
            rolled_back_at: None,
        };
        store::insert_if_missing(self.inner.db.conn(), &record).await?;
        Ok(head)
    }

    /// Merges `task_branch` (the work of `task`) onto `plan`'s integration branch and
    /// records it with a `plan.integrated` event. A conflict changes nothing.
    /// `failed_precondition` when the plan was rolled back meanwhile.
    pub async fn merge(
        &self,
        team: TeamId,
        plan: PlanId,
        task: TaskId,
        task_branch: &str,
    ) -> Result<Merge, Error> {
        let lock = self.lock(plan);
        let _guard = lock.lock().await;
        let record = self.get(team, plan).await?;
        check_open(&record, team)?;
        let message = format!("godel: integrate task {task} into plan {plan}");
        let merged = integrate::merge(&record.repo_path, plan, task_branch, &message)
            .await
            .map_err(|e| git_err("merging onto the plan's integration branch", &e))?;
        let head = match &merged {
            Merge::Merged { commit } => commit.clone(),
            Merge::AlreadyMerged { head } => head.clone(),
            Merge::Conflict { .. } => return Ok(merged),
        };
        let txn = self.begin().await?;
        let Some(mut record) = store::load_locked(&txn, plan).await? else {
            return Err(Error::not_found(format!("plan {plan}")));
        };
        if !record.merged_task_ids.contains(&task) {
            record.merged_task_ids.push(task);
        }
        record.head_commit = head;
        record.updated_at = Utc::now();
        store::update(&txn, &record).await?;
        let event = self.event(&record, "integrated", Some(task))?;
        self.commit(txn, event).await?;
        Ok(merged)
    }

    /// Resets `plan`'s integration branch to its base commit and records it (with a
    /// `plan.rolled_back` event); a second rollback changes nothing.
    pub async fn rollback(
        &self,
        team: TeamId,
        plan: PlanId,
        reason: &str,
    ) -> Result<RolledBack, Error> {
        let lock = self.lock(plan);
        let _guard = lock.lock().await;
        let record = self.get(team, plan).await?;
        if record.state == IntegrationState::RolledBack {
            return Ok(RolledBack {
                rolled_back: false,
                integration: record,
            });
        }
        integrate::rollback(&record.repo_path, plan, &record.base_commit)
            .await
            .map_err(|e| git_err("resetting the plan's integration branch", &e))?;
        let txn = self.begin().await?;
        let Some(mut record) = store::load_locked(&txn, plan).await? else {
            return Err(Error::not_found(format!("plan {plan}")));
        };
        let now = Utc::now();
        record.state = IntegrationState::RolledBack;
        record.head_commit = record.base_commit.clone();
        record.reason = Some(reason.to_owned());
        record.updated_at = now;
        record.rolled_back_at = Some(now);
        store::update(&txn, &record).await?;
        let event = self.event(&record, "rolled_back", None)?;
        self.commit(txn, event).await?;
        tracing::info!(plan_id = %plan, branch = %record.branch, base = %record.base_commit, reason, "rolled the plan's integration branch back");
        Ok(RolledBack {
            rolled_back: true,
            integration: record,
        })
    }

    /// The integration of `team`'s plan `plan`; `not_found` when this orchestrator
    /// has none.
    pub async fn get(&self, team: TeamId, plan: PlanId) -> Result<PlanIntegration, Error> {
        store::load(self.inner.db.conn(), plan)
            .await?
            .filter(|r| r.team_id == team)
            .ok_or_else(|| Error::not_found(format!("no integration branch of plan {plan}")))
    }

    async fn begin(&self) -> Result<godel_store::sea_orm::DatabaseTransaction, Error> {
        self.inner
            .db
            .conn()
            .begin()
            .await
            .map_err(store::db_err("starting a transaction"))
    }

    async fn commit(
        &self,
        txn: godel_store::sea_orm::DatabaseTransaction,
        event: OutboxEvent,
    ) -> Result<(), Error> {
        godel_store::outbox::enqueue(&txn, std::slice::from_ref(&event))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot write plan events to the outbox");
                Error::unavailable("the plan store failed while writing events")
            })?;
        txn.commit().await.map_err(store::db_err("committing"))?;
        self.inner.notifier.notify();
        Ok(())
    }

    fn event(
        &self,
        record: &PlanIntegration,
        name: &str,
        task: Option<TaskId>,
    ) -> Result<OutboxEvent, Error> {
        let data = PlanIntegrationEvent {
            team_id: record.team_id.to_string(),
            plan_id: record.plan_id.to_string(),
            branch: record.branch.clone(),
            base_commit: record.base_commit.clone(),
            head_commit: record.head_commit.clone(),
            task_id: task.map(|t| t.to_string()).unwrap_or_default(),
            reason: record.reason.clone().unwrap_or_default(),
            orchestrator_id: self.inner.orchestrator_id.to_string(),
            occurred_at: Some(godel_proto::convert::to_timestamp(record.updated_at)),
        };
        cloud_event(
            Subject::plan(record.team_id, name),
            EVENT_SOURCE,
            "plan",
            &record.plan_id.to_string(),
            record.updated_at,
            &data,
        )
    }
}

/// Refuses work on an integration of another team or one rolled back.
fn check_open(record: &PlanIntegration, team: TeamId) -> Result<(), Error> {
    if record.team_id != team {
        return Err(Error::not_found(format!("plan {}", record.plan_id)));
    }
    if record.state == IntegrationState::RolledBack {
        return Err(Error::failed_precondition(format!(
            "plan {} was rolled back{}",
            record.plan_id,
            record
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

fn git_err(operation: &str, error: &crate::runtime::worktree::WorktreeError) -> Error {
    Error::unavailable(format!("{operation} failed: {}", godel_error::chain(error)))
}

/// Rolls plans back as a whole: cancels the plan at the scheduler (when asked and a
/// scheduler is configured), stops the plan's sessions this orchestrator runs, then
/// resets its integration branch. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PlanControl {
    sessions: crate::session::Sessions,
    scheduler: Option<crate::intake::Scheduler>,
}

impl std::fmt::Debug for PlanControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanControl").finish_non_exhaustive()
    }
}

impl PlanControl {
    pub fn new(
        sessions: crate::session::Sessions,
        scheduler: Option<crate::intake::Scheduler>,
    ) -> Self {
        Self {
            sessions,
            scheduler,
        }
    }

    pub fn integrations(&self) -> &Integrations {
        self.sessions.integrations()
    }

    /// Rolls `team`'s plan `plan` back with `reason`; with `cancel`, cancels its
    /// unfinished tasks at the scheduler first (an unreachable scheduler fails the
    /// call: nothing is reset while its tasks could still be handed out).
    pub async fn rollback(
        &self,
        team: TeamId,
        plan: PlanId,
        reason: &str,
        cancel: bool,
    ) -> Result<RolledBack, Error> {
        // Not found before anything is cancelled.
        let before = self.integrations().get(team, plan).await?;
        if cancel {
            match &self.scheduler {
                Some(scheduler) => match scheduler.cancel_plan(team, plan, reason).await {
                    Ok(()) => {}
                    // The scheduler does not know it (any more): nothing to cancel.
                    Err(error) if error.code == ErrorCode::NotFound => {}
                    Err(error) => return Err(error),
                },
                None => {
                    tracing::warn!(plan_id = %plan, "no scheduler configured: rolling the plan back without cancelling its tasks");
                }
            }
        }
        let stopped = self.sessions.stop_plan(team, plan, reason).await;
        if stopped > 0 {
            tracing::info!(plan_id = %plan, stopped, "stopped the plan's sessions");
        }
        let mut done = self.integrations().rollback(team, plan, reason).await?;
        // The scheduler's `plan.cancelled` event, which this call caused, may have
        // rolled the plan back meanwhile: that is still this call's doing.
        done.rolled_back |= before.state == IntegrationState::Open;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_plan_comes_from_the_payload() {
        let plan = PlanId::new();
        let base = "a".repeat(40);
        let spec = PlanSpec::of_payload(
            &json!({"plan": {"id": plan.to_string(), "base": base, "run_gate": true}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.id, plan);
        assert!(spec.run_gate);
        assert_eq!(PlanSpec::of_payload(&json!({})).unwrap(), None);
        assert_eq!(
            PlanSpec::of_payload(&json!({"plan": {"base": base}})).unwrap(),
            None
        );
        for bad in [
            json!({"plan": {"id": plan.to_string(), "base": "main"}}),
            json!({"plan": {"id": "x", "base": base}}),
            json!({"plan": {"id": plan.to_string()}}),
            json!({"plan": {"id": plan.to_string(), "base": base, "run_gate": "yes"}}),
        ] {
            assert!(PlanSpec::of_payload(&bad).is_err(), "{bad}");
        }
    }
}
