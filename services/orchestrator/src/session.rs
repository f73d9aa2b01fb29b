//! Agent sessions: one agent working on one task (at one epoch) in its own worktree,
//! stored with its state and an append-only event log, and run end to end by a
//! supervisor on the worktree runtime.
//!
//! [`Sessions`] is the entry point, for the gRPC API and for work intake alike:
//! [`Sessions::start`] records a session (refusing a stale task epoch) and starts its
//! supervisor; [`Sessions::stop`] stops it in order; reads go to the store. Every
//! state change is written with a `state_change` entry in the session's log and a
//! `session.<state>` event in the outbox, in one transaction; every log entry is also
//! published as a `session.activity` event through the outbox (see
//! `docs/events.md`).

mod adapter;
mod events;
pub mod inprocess;
mod integrate;
mod model;
mod recovery;
mod store;
mod supervisor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;
use godel_error::Error;
use godel_store::sea_orm::{ConnAcquireErr, DatabaseTransaction, DbErr, TransactionTrait};
use godel_store::{Db, OutboxEvent, RelayNotifier};
use godel_types::{OrchestratorId, ProfileId, SessionId, TaskId, TeamId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SessionsConfig;
use crate::runtime::worktree::{WorktreeConfig, WorktreeManager};

pub use adapter::LlmAccess;
pub(crate) use events::EVENT_SOURCE;
pub use model::{
    GateSummary, Integration, LogBody, LoggedEvent, MergeSummary, NewEvent, Repository, Session,
    SessionLimits, SessionResult, SessionState, Usage,
};
pub use recovery::{Recovered, Swept};
pub use store::ListFilter;

/// The runtime every session runs in for now: a worktree and a local process.
pub const RUNTIME: &str = "process";

/// Most events read from the store per query while streaming.
const STREAM_READ_BATCH: usize = 500;

/// How often a stream re-reads the store for a session this orchestrator does not run.
const REMOTE_POLL: Duration = Duration::from_millis(250);

/// What it takes to start a session.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub team_id: TeamId,
    pub task_id: TaskId,
    /// The epoch of the lease on the task the session runs under.
    pub epoch: u64,
    pub profile_id: Option<ProfileId>,
    /// The adapter; `None` for the configured default.
    pub adapter: Option<String>,
    pub repository: Repository,
    pub prompt: String,
    pub task_type: String,
    pub payload: serde_json::Value,
    pub limits: SessionLimits,
}

/// The result of [`Sessions::start`].
#[derive(Debug, Clone)]
pub struct Started {
    pub session: Session,
    /// False when a session for this task and epoch already existed.
    pub created: bool,
}

/// A page of sessions.
#[derive(Debug, Clone)]
pub struct Page {
    pub sessions: Vec<Session>,
    /// Pass as [`ListFilter::after`] for the next page; `None` on the last.
    pub next: Option<SessionId>,
}

/// Why a stop was asked for.
#[derive(Debug, Clone, Default)]
struct StopRequest {
    reason: String,
}

/// The handle of a session this orchestrator is running.
struct Live {
    cancel: CancellationToken,
    force: CancellationToken,
    stop: Mutex<Option<StopRequest>>,
    /// Bumped after every commit that touched the session.
    changes: watch::Sender<u64>,
    /// Cancelled once the session ended and its supervisor is done.
    done: CancellationToken,
    /// Writes to the agent's stdin while it runs, for an adapter that can be
    /// steered (see [`Sessions::steer`]).
    steer: Mutex<Option<Steer>>,
}

/// How a running agent is steered: its protocol's command, written to its stdin.
#[derive(Clone)]
struct Steer {
    protocol: crate::adapters::Protocol,
    stdin: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

impl Live {
    fn request_stop(&self, request: StopRequest, force: bool) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.get_or_insert(request);
        }
        if force {
            self.force.cancel();
        }
        self.cancel.cancel();
    }

    fn stop_request(&self) -> Option<StopRequest> {
        self.stop.lock().ok().and_then(|stop| stop.clone())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// The longest a write waits for a pooled connection (in rounds of the pool's acquire
/// timeout) before it fails.
const WRITE_QUEUE_LIMIT: Duration = Duration::from_secs(60);

struct Inner {
    db: Db,
    notifier: RelayNotifier,
    config: SessionsConfig,
    orchestrator_id: OrchestratorId,
    worktrees: WorktreeManager,
    live: Mutex<HashMap<SessionId, Arc<Live>>>,
    tracker: TaskTracker,
    /// The LLM proxy's base URL, when it runs: every session then gets a token.
    llm_proxy: OnceLock<String>,
    /// One permit per pooled connection, taken (first come, first served) before a
    /// write transaction starts. Many sessions ending at once (a shutdown, a mass
    /// stop) then queue here instead of timing out together in the pool's acquire
    /// and losing how they ended.
    writes: Arc<Semaphore>,
    /// Plans' integration branches: plan tasks start from and merge onto them.
    integrations: crate::plans::Integrations,
}

/// The sessions of this orchestrator. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("orchestrator_id", &self.inner.orchestrator_id)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions stored in `db` (migrated with the orchestrator's migrations), run by
    /// the orchestrator `orchestrator_id`; `notifier` wakes the outbox relay.
    pub fn new(
        db: Db,
        notifier: RelayNotifier,
        config: SessionsConfig,
        orchestrator_id: OrchestratorId,
    ) -> Self {
        let worktrees = WorktreeManager::new(WorktreeConfig {
            worktrees_dir: config.worktrees_dir.clone(),
            cache_dir: config.cache_dir.clone(),
            keep_failed_for: config.keep_failed_for,
        });
        let writes = Arc::new(Semaphore::new(db.max_connections().max(1) as usize));
        let integrations =
            crate::plans::Integrations::new(db.clone(), notifier.clone(), orchestrator_id);
        Self {
            inner: Arc::new(Inner {
                db,
                notifier,
                config,
                orchestrator_id,
                worktrees,
                live: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                llm_proxy: OnceLock::new(),
                writes,
                integrations,
            }),
        }
    }

    pub fn orchestrator_id(&self) -> OrchestratorId {
        self.inner.orchestrator_id
    }

    /// The plans' integration branches.
    pub fn integrations(&self) -> &crate::plans::Integrations {
        &self.inner.integrations
    }

    /// Stops every session of `team`'s plan `plan` this orchestrator runs (waiting
    /// until each ended); returns how many it stopped.
    pub async fn stop_plan(&self, team: TeamId, plan: godel_types::PlanId, reason: &str) -> usize {
        let live: Vec<SessionId> = self
            .inner
            .live
            .lock()
            .map(|map| map.keys().copied().collect())
            .unwrap_or_default();
        let mut stopped = 0;
        for id in live {
            let Ok(session) = self.get(team, id).await else {
                continue;
            };
            let of_plan = crate::plans::PlanSpec::of_payload(&session.payload)
                .ok()
                .flatten()
                .is_some_and(|p| p.id == plan);
            if !of_plan || session.state.is_terminal() {
                continue;
            }
            match self.stop(team, id, reason, false).await {
                Ok(_) => stopped += 1,
                Err(error) => {
                    tracing::warn!(session_id = %id, plan_id = %plan, error = %error, "cannot stop a session of a plan being rolled back");
                }
            }
        }
        stopped
    }

    /// Hands every session started from now on a token for the LLM proxy at
    /// `base_url` (set once, before sessions start; later calls are ignored).
    pub fn set_llm_proxy(&self, base_url: String) {
        let _ = self.inner.llm_proxy.set(base_url);
    }

    /// Appends a `usage` event metered by the LLM proxy to session `id`'s log
    /// (adding to its totals), with `raw` describing the call.
    pub async fn record_usage(
        &self,
        id: SessionId,
        usage: Usage,
        raw: String,
    ) -> Result<Session, Error> {
        let (_write, txn) = self.inner.begin().await?;
        let mut session = store::load(&txn, id, None, true)
            .await?
            .ok_or_else(|| Error::not_found(format!("session {id}")))?;
        let event = NewEvent {
            body: LogBody::Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cost_micro_usd: usage.cost_micro_usd,
            },
            raw,
        };
        let logged = store::append(&txn, &mut session, vec![event], Utc::now()).await?;
        let outbox = logged
            .iter()
            .map(|event| events::activity_event(&session, event))
            .collect::<Result<Vec<_>, _>>()?;
        self.inner.commit(txn, &outbox).await?;
        if let Some(live) = self.inner.live_handle(id) {
            live.bump();
        }
        Ok(session)
    }

    /// Usage totals of `team`'s sessions, of one task's when `task` is given.
    pub async fn usage(&self, team: TeamId, task: Option<TaskId>) -> Result<Usage, Error> {
        store::usage_totals(self.inner.db.conn(), team, task).await
    }

    /// Records a session for `spec` and starts running it. The same task and epoch
    /// again returns the existing session (`created` false); an epoch older than one
    /// a session of the task was started with fails with `failed_precondition`.
    pub async fn start(&self, spec: StartSpec) -> Result<Started, Error> {
        if self.inner.tracker.is_closed() {
            return Err(Error::unavailable(
                "the orchestrator is shutting down and starts no sessions",
            ));
        }
        let adapter = spec
            .adapter
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| self.inner.config.default_adapter.clone());
        adapter::validate(&self.inner.config, &adapter, &spec.payload)?;
        let runtime = if inprocess::requested(&spec.payload) {
            if adapter != "sim" {
                return Err(Error::invalid_argument(
                    "payload_json",
                    format!(
                        "`runtime: {}` runs only the simulated agent (`sim`), not `{adapter}`",
                        inprocess::RUNTIME
                    ),
                ));
            }
            inprocess::RUNTIME
        } else {
            validate_repository(&self.inner.config, &spec.repository)?;
            RUNTIME
        };
        let now = Utc::now();
        let session = Session {
            id: SessionId::new(),
            team_id: spec.team_id,
            task_id: spec.task_id,
            epoch: spec.epoch,
            profile_id: spec.profile_id,
            adapter,
            runtime: runtime.to_owned(),
            repository: spec.repository,
            branch: None,
            base_commit: None,
            orchestrator_id: self.inner.orchestrator_id,
            state: SessionState::Pending,
            confinement: None,
            task_type: spec.task_type,
            prompt: spec.prompt,
            payload: spec.payload,
            limits: spec.limits,
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            error: None,
            result: None,
            usage: Usage::default(),
            last_event_offset: 0,
        };
        let (_write, txn) = self.inner.begin().await?;
        if let store::Fence::Existing(existing) =
            store::fence(&txn, spec.team_id, spec.task_id, spec.epoch).await?
        {
            txn.rollback()
                .await
                .map_err(store::db_err("rolling back"))?;
            return Ok(Started {
                session: *existing,
                created: false,
            });
        }
        store::insert(&txn, &session).await?;
        let mut session = session;
        let logged = store::append(
            &txn,
            &mut session,
            vec![NewEvent::own(LogBody::StateChange {
                from: None,
                to: SessionState::Pending,
                reason: "session accepted".to_owned(),
            })],
            now,
        )
        .await?;
        // The log's activity first, then the state event: subscribers see a state
        // only after everything logged before it.
        let mut outbox = logged
            .iter()
            .map(|event| events::activity_event(&session, event))
            .collect::<Result<Vec<_>, _>>()?;
        outbox.push(events::state_event(
            &session,
            None,
            "session accepted",
            now,
        )?);
        self.inner.commit(txn, &outbox).await?;

        // Older epochs of the task lost their lease: stop their sessions; this one
        // takes the task's branch once they let go of it.
        let superseded = self.supersede(&session).await;

        let (changes, _) = watch::channel(0);
        let live = Arc::new(Live {
            cancel: CancellationToken::new(),
            force: CancellationToken::new(),
            stop: Mutex::new(None),
            changes,
            done: CancellationToken::new(),
            steer: Mutex::new(None),
        });
        if let Ok(mut map) = self.inner.live.lock() {
            map.insert(session.id, live.clone());
        }
        let inner = self.inner.clone();
        let run = session.clone();
        self.inner
            .tracker
            .spawn(async move { supervisor::supervise(inner, run, live, superseded).await });
        Ok(Started {
            session,
            created: true,
        })
    }

    /// Stops the running sessions of `session`'s task that hold an older epoch;
    /// returns tokens cancelled once each has ended.
    async fn supersede(&self, session: &Session) -> Vec<CancellationToken> {
        let filter = ListFilter {
            task: Some(session.task_id),
            ..ListFilter::default()
        };
        let mut ending = Vec::new();
        let older = match store::list(self.inner.db.conn(), session.team_id, &filter, 100).await {
            Ok(older) => older,
            Err(error) => {
                tracing::warn!(session_id = %session.id, error = %error, "cannot look for superseded sessions");
                return ending;
            }
        };
        for old in older
            .into_iter()
            .filter(|s| s.epoch < session.epoch && !s.state.is_terminal())
        {
            let reason = format!("superseded by epoch {}", session.epoch);
            if let Some(live) = self.inner.live_handle(old.id) {
                live.request_stop(StopRequest { reason }, false);
                ending.push(live.done.clone());
            }
        }
        ending
    }

    /// Stops a session: asks its agent to stop (interrupt, then SIGTERM, then SIGKILL
    /// to the whole process group; at once with `force`) and waits until it ended.
    /// A session that already ended is returned as it is.
    pub async fn stop(
        &self,
        team: TeamId,
        id: SessionId,
        reason: &str,
        force: bool,
    ) -> Result<Session, Error> {
        let session = self.get(team, id).await?;
        if session.state.is_terminal() {
            return Ok(session);
        }
        let reason = if reason.is_empty() {
            "stopped on request".to_owned()
        } else {
            reason.to_owned()
        };
        match self.inner.live_handle(id) {
            Some(live) => {
                let mut changes = live.changes.subscribe();
                live.request_stop(StopRequest { reason }, force);
                loop {
                    let session = self.get(team, id).await?;
                    if session.state.is_terminal() {
                        return Ok(session);
                    }
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() {
                            return self.get(team, id).await;
                        },
                        () = live.done.cancelled() => return self.get(team, id).await,
                    }
                }
            }
            // Nothing runs it here (another orchestrator's, or left from before a
            // restart): record the stop.
            None => {
                let change = store::Change {
                    reason: reason.clone(),
                    error: Some(reason),
                    ..store::Change::default()
                };
                self.inner
                    .transition(id, SessionState::Cancelled, change, Vec::new())
                    .await
            }
        }
    }

    /// Sends `message` to the agent of running session `id`, which takes it into
    /// its conversation mid-run (Pi's `steer`). Fails with `failed_precondition`
    /// when the session's adapter cannot be steered, its agent is not running (not
    /// yet, or any more) or this orchestrator does not run it.
    pub async fn steer(
        &self,
        team: TeamId,
        id: SessionId,
        message: &str,
    ) -> Result<Session, Error> {
        if message.trim().is_empty() {
            return Err(Error::invalid_argument(
                "message",
                "`message` must not be empty",
            ));
        }
        let session = self.get(team, id).await?;
        let steerable =
            crate::adapters::Cli::from_name(&session.adapter).is_some_and(|cli| cli.steerable());
        if !steerable {
            return Err(Error::failed_precondition(format!(
                "the `{}` adapter cannot be steered (only `pi` can)",
                session.adapter
            )));
        }
        if session.state.is_terminal() {
            return Err(Error::failed_precondition(format!(
                "session {id} has ended ({})",
                session.state.as_str()
            )));
        }
        let Some(live) = self.inner.live_handle(id) else {
            return Err(Error::failed_precondition(format!(
                "session {id} does not run on this orchestrator"
            )));
        };
        let steer = live.steer.lock().ok().and_then(|steer| steer.clone());
        let line = steer
            .as_ref()
            .and_then(|steer| steer.protocol.steer_command(message));
        let sent = match (steer, line) {
            (Some(steer), Some(line)) => steer.stdin.send(line).is_ok(),
            _ => false,
        };
        if !sent {
            return Err(Error::failed_precondition(format!(
                "the agent of session {id} is not running (state {})",
                session.state.as_str()
            )));
        }
        tracing::info!(session_id = %id, "steered the session's agent");
        Ok(session)
    }

    /// The session `id` of `team`.
    pub async fn get(&self, team: TeamId, id: SessionId) -> Result<Session, Error> {
        store::load(self.inner.db.conn(), id, Some(team), false)
            .await?
            .ok_or_else(|| Error::not_found(format!("session {id}")))
    }

    /// A page of `team`'s sessions, newest first. `page_size` 0 means the default;
    /// larger sizes are capped.
    pub async fn list(
        &self,
        team: TeamId,
        filter: &ListFilter,
        page_size: usize,
    ) -> Result<Page, Error> {
        let config = &self.inner.config;
        let size = match page_size {
            0 => config.default_page_size,
            n => n.min(config.max_page_size),
        }
        .max(1);
        let mut sessions = store::list(self.inner.db.conn(), team, filter, size + 1).await?;
        let next = if sessions.len() > size {
            sessions.truncate(size);
            sessions.last().map(|s| s.id)
        } else {
            None
        };
        Ok(Page { sessions, next })
    }

    /// Up to `limit` logged events of `session` from `from` (1 = the first) on.
    async fn events(
        &self,
        session: SessionId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, Error> {
        store::events(self.inner.db.conn(), session, from.max(1), limit).await
    }

    /// Sends `session`'s events from offset `from` to `out` in order: what is
    /// recorded, then (with `follow`) every new event until the session ended and
    /// its last event was sent. Every event is read from the store by offset, so
    /// nothing is skipped or repeated when the replay turns into the live tail.
    /// Returns when done or when `out` is closed.
    pub async fn stream(
        &self,
        team: TeamId,
        id: SessionId,
        from: u64,
        follow: bool,
        out: tokio::sync::mpsc::Sender<LoggedEvent>,
    ) -> Result<(), Error> {
        let mut next = from.max(1);
        loop {
            // Subscribe before reading, so a change committed after the read is seen.
            let mut changes = self.inner.live_handle(id).map(|l| l.changes.subscribe());
            let session = self.get(team, id).await?;
            loop {
                let batch = self.events(id, next, STREAM_READ_BATCH).await?;
                let Some(last) = batch.last().map(|e| e.offset) else {
                    break;
                };
                for event in batch {
                    if out.send(event).await.is_err() {
                        return Ok(());
                    }
                }
                next = last + 1;
            }
            if !follow || (session.state.is_terminal() && next > session.last_event_offset) {
                return Ok(());
            }
            match changes.as_mut() {
                Some(changes) => {
                    tokio::select! {
                        _ = changes.changed() => {}
                        () = out.closed() => return Ok(()),
                    }
                }
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(REMOTE_POLL) => {}
                        () = out.closed() => return Ok(()),
                    }
                }
            }
        }
    }

    /// Waits until session `id` of `team` ended (or, when nothing runs it here,
    /// returns it as stored) and returns it.
    pub async fn ended(&self, team: TeamId, id: SessionId) -> Result<Session, Error> {
        if let Some(live) = self.inner.live_handle(id) {
            live.done.cancelled().await;
        }
        self.get(team, id).await
    }

    /// Whether this orchestrator runs session `id` right now.
    pub fn is_live(&self, id: SessionId) -> bool {
        self.inner.live_handle(id).is_some()
    }

    /// How many sessions this orchestrator runs right now.
    pub fn live_count(&self) -> usize {
        self.inner.live.lock().map(|map| map.len()).unwrap_or(0)
    }

    /// Up to `limit` sessions recorded by this orchestrator (any team) that have
    /// not ended or ended at or after `finished_since`, oldest first.
    pub async fn of_this_orchestrator(
        &self,
        finished_since: chrono::DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Session>, Error> {
        store::of_orchestrator(
            self.inner.db.conn(),
            self.inner.orchestrator_id,
            finished_since,
            limit,
        )
        .await
    }

    /// Moves a session to `to` directly, checking the transition (for operators and
    /// reconciliation; a running session's own supervisor moves it otherwise).
    pub async fn set_state(
        &self,
        id: SessionId,
        to: SessionState,
        reason: &str,
    ) -> Result<Session, Error> {
        let change = store::Change {
            reason: reason.to_owned(),
            ..store::Change::default()
        };
        self.inner.transition(id, to, change, Vec::new()).await
    }

    /// Stops every running session (they end as cancelled) and waits for their
    /// supervisors to finish.
    pub async fn shutdown(&self) {
        let live: Vec<Arc<Live>> = self
            .inner
            .live
            .lock()
            .map(|map| map.values().cloned().collect())
            .unwrap_or_default();
        for session in live {
            session.request_stop(
                StopRequest {
                    reason: "the orchestrator is shutting down".to_owned(),
                },
                false,
            );
        }
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

impl Inner {
    fn live_handle(&self, id: SessionId) -> Option<Arc<Live>> {
        self.live.lock().ok().and_then(|map| map.get(&id).cloned())
    }

    /// Starts a write transaction once a write permit is free; keep the permit until
    /// the transaction has ended.
    async fn begin(&self) -> Result<(OwnedSemaphorePermit, DatabaseTransaction), Error> {
        let permit = self
            .writes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::unavailable("the session store is closed"))?;
        // Readers (streams, lookups, the outbox relay) share the pool: when they keep
        // it busy past its acquire timeout, a writer holding its permit tries again
        // rather than lose a state change, for up to `WRITE_QUEUE_LIMIT`.
        let deadline = tokio::time::Instant::now() + WRITE_QUEUE_LIMIT;
        loop {
            match self.db.conn().begin().await {
                Ok(txn) => return Ok((permit, txn)),
                Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!("session store pool busy; waiting for a connection again");
                }
                Err(e) => return Err(store::db_err("starting a transaction")(e)),
            }
        }
    }

    /// Writes `outbox` in `txn`, commits and wakes the relay.
    async fn commit(&self, txn: DatabaseTransaction, outbox: &[OutboxEvent]) -> Result<(), Error> {
        if !outbox.is_empty() {
            godel_store::outbox::enqueue(&txn, outbox)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot write session events to the outbox");
                    Error::unavailable("the session store failed while writing events")
                })?;
        }
        txn.commit().await.map_err(store::db_err("committing"))?;
        if !outbox.is_empty() {
            self.notifier.notify();
        }
        Ok(())
    }

    /// Moves session `id` to `to` with `change`, appending `extra` after the
    /// `state_change` entry; publishes through the outbox and wakes streams.
    async fn transition(
        &self,
        id: SessionId,
        to: SessionState,
        change: store::Change,
        extra: Vec<NewEvent>,
    ) -> Result<Session, Error> {
        let (_write, txn) = self.begin().await?;
        let current = store::load(&txn, id, None, true)
            .await?
            .ok_or_else(|| Error::not_found(format!("session {id}")))?;
        let reason = change.reason.clone();
        let now = Utc::now();
        let (session, logged) = store::transition(&txn, &current, to, change, extra, now).await?;
        if to.is_terminal() {
            crate::proxy::tokens::revoke(&txn, id, now).await?;
        }
        let mut outbox = logged
            .iter()
            .map(|event| events::activity_event(&session, event))
            .collect::<Result<Vec<_>, _>>()?;
        outbox.push(events::state_event(
            &session,
            Some(current.state),
            &reason,
            now,
        )?);
        self.commit(txn, &outbox).await?;
        if let Some(live) = self.live_handle(id) {
            live.bump();
        }
        Ok(session)
    }

    fn home(&self, id: SessionId) -> PathBuf {
        self.config.homes_dir.join(id.to_string())
    }
}

/// Refuses a repository the configuration does not allow.
fn validate_repository(config: &SessionsConfig, repo: &Repository) -> Result<(), Error> {
    if repo.url.is_empty() {
        return Err(Error::invalid_argument(
            "repository.url",
            "`repository.url` is required",
        ));
    }
    if repo.url.starts_with('/') && !config.allow_local_repositories {
        return Err(Error::invalid_argument(
            "repository.url",
            "local repository paths are not allowed here; give a clone URL",
        ));
    }
    if repo.url.starts_with('-') {
        return Err(Error::invalid_argument(
            "repository.url",
            "`repository.url` must not start with `-`",
        ));
    }
    Ok(())
}
