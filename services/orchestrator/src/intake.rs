//! Work intake: the orchestrator takes leased tasks from the scheduler and runs
//! them as sessions (issue 4, DESIGN.md §3 invariants 2 and 5).
//!
//! - **Registration**: registers with the scheduler (capacity, labels, runtime)
//!   and heartbeats with its active sessions; on shutdown it heartbeats
//!   `draining` first, so nothing new is placed on it, then hands its work back.
//! - **Dispatch**: consumes `godel.v1.dispatch.<orchestrator_id>` with a durable
//!   consumer named after its id. For each announced task it reads the task
//!   (`GetTask`), checks it still holds the lease at the announced epoch, maps the
//!   payload to a session (`payload`) and starts it under the task id and epoch;
//!   the message is acked only once every session is recorded (a crash redelivers
//!   it, and starting is idempotent per task and epoch). A payload that describes
//!   no session fails the task for good (`invalid_payload`).
//! - **Leases**: while a session runs its lease is heartbeated at its epoch; when
//!   the scheduler refuses (the epoch is stale, the task was cancelled or moved on)
//!   the session is stopped and nothing is reported.
//! - **Reports** (`report`): succeeded → `CompleteTask` with the result (commit,
//!   diff summary, usage); failed → `FailTask`, retryable; cancelled by this
//!   orchestrator's shutdown → `FailTask` retryable (retried elsewhere); cancelled
//!   by an operator → `FailTask` not retryable; lost → retryable. A report is sent
//!   until accepted or refused because the lease is gone, backing off.
//! - **Reconciliation** (`reconcile`): level-triggered, on a timer.
//! - **Plans** (`crate::plans`): a plan task's payload gets `plan.id` from the task;
//!   after reporting a plan task's failure for good, and whenever the scheduler
//!   announces a plan `failed` or `cancelled` (`plan.failed`, `plan.cancelled` on the
//!   bus, durable consumer `orchestrator-plans-<id>`), the plan's sessions here are
//!   stopped and its integration branch is rolled back to the plan's base.

mod payload;
mod reconcile;
mod report;
mod scheduler;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use godel_bus::{Bus, ConsumerConfig, Delivery, Subject};
use godel_error::{Error, ErrorCode};
use godel_proto::events::v1::{DispatchEvent, PlanEvent};
use godel_types::{OrchestratorId, PlanId, SessionId, TaskId, TeamId};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::IntakeConfig;
use crate::plans::{PlanControl, PlanSpec};
use crate::session::{Session, Sessions};
use report::Report;
pub(crate) use scheduler::Scheduler;
use scheduler::lease_gone;

/// Longest pause between attempts to register or to (re)create the consumer.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Most sessions one reconciliation pass looks at.
const RECONCILE_BATCH: usize = 1000;

/// The intake of one orchestrator. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Intake {
    inner: Arc<Inner>,
}

struct Inner {
    config: IntakeConfig,
    id: OrchestratorId,
    sessions: Sessions,
    scheduler: Scheduler,
    plans: PlanControl,
    bus: Arc<dyn Bus>,
    draining: AtomicBool,
    /// One registration heartbeat at a time, so the `draining` one the drain sends
    /// is never overtaken by an older one still in flight (which would tell the
    /// scheduler to place work here again).
    heartbeat_turn: tokio::sync::Mutex<()>,
    /// Sessions with a watcher (lease heartbeats, then the report).
    watched: Mutex<HashSet<SessionId>>,
    /// Sessions stopped because their lease moved on: never reported.
    stale: Mutex<HashSet<SessionId>>,
    /// Held while a dispatched session is being started and put under watch, and
    /// by reconciliation before it declares a session lost: a session being
    /// started is never mistaken for one left from before a restart.
    starting: tokio::sync::Mutex<()>,
    /// Watchers and reports in flight.
    tracker: TaskTracker,
    /// Cancelled when the drain timeout passed: reports stop retrying.
    give_up: CancellationToken,
}

impl Intake {
    /// The intake of orchestrator `id` (the id its `sessions` record).
    pub fn new(
        config: IntakeConfig,
        id: OrchestratorId,
        sessions: Sessions,
        bus: Arc<dyn Bus>,
        plans: PlanControl,
    ) -> Result<Self, Error> {
        let scheduler = Scheduler::new(&config.scheduler_endpoint, id)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                id,
                sessions,
                scheduler,
                plans,
                bus,
                draining: AtomicBool::new(false),
                heartbeat_turn: tokio::sync::Mutex::new(()),
                watched: Mutex::new(HashSet::new()),
                stale: Mutex::new(HashSet::new()),
                starting: tokio::sync::Mutex::new(()),
                tracker: TaskTracker::new(),
                give_up: CancellationToken::new(),
            }),
        })
    }

    /// Runs intake until `stop` is cancelled, then drains: heartbeats `draining`,
    /// stops taking work, stops the sessions and hands their tasks back.
    pub async fn run(self, stop: CancellationToken) {
        let work = CancellationToken::new();
        let heartbeats = CancellationToken::new();
        let beating = tokio::spawn(self.clone().heartbeat_loop(heartbeats.clone()));
        let reconciling = tokio::spawn(self.clone().reconcile_loop(work.clone()));
        let planning = tokio::spawn(self.clone().plan_events(work.clone()));
        tokio::select! {
            () = self.register_and_consume() => stop.cancelled().await,
            () = stop.cancelled() => {}
        }
        self.drain(work, heartbeats).await;
        let _ = planning.await;
        let _ = reconciling.await;
        let _ = beating.await;
    }

    async fn drain(&self, work: CancellationToken, heartbeats: CancellationToken) {
        let inner = &self.inner;
        tracing::info!(orchestrator_id = %inner.id, "draining: no new work, handing back running sessions");
        inner.draining.store(true, Ordering::SeqCst);
        self.heartbeat().await;
        work.cancel();
        // Every session ends (as cancelled); its watcher hands its task back.
        inner.sessions.shutdown().await;
        // One last pass finds sessions that ended without a watcher (one being
        // started when the shutdown began) and hands their tasks back too.
        match tokio::time::timeout(inner.config.drain_timeout, self.reconcile()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "the last reconciliation failed"),
            Err(_) => tracing::warn!("the last reconciliation did not finish in time"),
        }
        inner.tracker.close();
        if tokio::time::timeout(inner.config.drain_timeout, inner.tracker.wait())
            .await
            .is_err()
        {
            inner.give_up.cancel();
            inner.tracker.wait().await;
        }
        heartbeats.cancel();
        self.heartbeat().await;
    }

    /// Registers (retrying), then consumes the dispatch subject until the bus closes.
    async fn register_and_consume(&self) {
        let inner = &self.inner;
        let mut backoff = Duration::from_millis(100);
        loop {
            match inner.scheduler.register(&inner.config).await {
                Ok(lease) => {
                    tracing::info!(orchestrator_id = %inner.id, lease_duration = ?lease, "registered with the scheduler");
                    break;
                }
                Err(error) => {
                    tracing::warn!(error = %error, retry_in = ?backoff, "cannot register with the scheduler");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY);
                }
            }
        }
        let subject = Subject::dispatch(inner.id).to_string();
        let durable = format!("orchestrator-{}", inner.id);
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut consumer = match inner
                .bus
                .consumer(ConsumerConfig::new(durable.clone(), vec![subject.clone()]))
                .await
            {
                Ok(consumer) => consumer,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in = ?backoff, "cannot consume the dispatch subject");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY);
                    continue;
                }
            };
            loop {
                match consumer.next().await {
                    Ok(Some(delivery)) => self.handle(delivery).await,
                    Ok(None) => {
                        tracing::info!("the bus closed; no more dispatched work");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "reading the dispatch subject failed; consuming again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_RETRY);
                        break;
                    }
                }
            }
        }
    }

    /// Starts the sessions of one dispatch message; acks it once all are recorded,
    /// else asks for it again.
    async fn handle(&self, delivery: Delivery) {
        let event = match godel_proto::cloudevent::decode::<DispatchEvent>(&delivery.payload) {
            Ok(event) => event.data,
            Err(error) => {
                tracing::warn!(error = %error, subject = %delivery.subject, "dropping an unreadable dispatch message");
                ack(delivery).await;
                return;
            }
        };
        if event.orchestrator_id != self.inner.id.to_string() {
            tracing::warn!(to = %event.orchestrator_id, "dropping a dispatch message for another orchestrator");
            ack(delivery).await;
            return;
        }
        let mut again = false;
        for task in event.tasks {
            let (Ok(team), Ok(task_id)) = (
                task.team_id.parse::<TeamId>(),
                task.task_id.parse::<TaskId>(),
            ) else {
                tracing::warn!(team_id = %task.team_id, task_id = %task.task_id, "dropping a dispatched task with a malformed id");
                continue;
            };
            if let Err(error) = self.take(team, task_id, task.epoch).await {
                tracing::warn!(task_id = %task_id, epoch = task.epoch, error = %error, "cannot take a dispatched task yet");
                again = true;
            }
        }
        if again {
            if let Err(error) = delivery.nak(Some(Duration::from_secs(1))).await {
                tracing::warn!(error = %error, "cannot ask for a dispatch message again");
            }
        } else {
            ack(delivery).await;
        }
    }

    /// Takes one dispatched task: starts its session, or fails it for good when its
    /// payload describes none. An error means "try again later".
    async fn take(&self, team: TeamId, task_id: TaskId, epoch: u64) -> Result<(), Error> {
        let inner = &self.inner;
        if inner.draining.load(Ordering::SeqCst) {
            return Err(Error::unavailable("the orchestrator is draining"));
        }
        let task = match inner.scheduler.get_task(team, task_id).await {
            Ok(task) => task,
            Err(error) if error.code == ErrorCode::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        if !task.held_by(inner.id, epoch) {
            tracing::info!(task_id = %task_id, epoch, "skipping a dispatched task whose lease moved on");
            return Ok(());
        }
        let spec = match payload::start_spec(&task, epoch) {
            Ok(spec) => spec,
            Err(error) => {
                self.hand_back(
                    None,
                    task_id,
                    epoch,
                    Report::fail("invalid_payload", error.message, false),
                );
                return Ok(());
            }
        };
        let _starting = inner.starting.lock().await;
        match inner.sessions.start(spec).await {
            Ok(started) => {
                if started.created {
                    tracing::info!(task_id = %task_id, epoch, session_id = %started.session.id, "started a session for a dispatched task");
                }
                self.watch(started.session);
                Ok(())
            }
            Err(error) if error.code == ErrorCode::InvalidArgument => {
                self.hand_back(
                    None,
                    task_id,
                    epoch,
                    Report::fail("invalid_payload", error.message, false),
                );
                Ok(())
            }
            // A newer epoch of the task already ran here: this one is stale.
            Err(error) if error.code == ErrorCode::FailedPrecondition => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Sends `report` for a task in the background.
    fn hand_back(&self, session: Option<SessionId>, task: TaskId, epoch: u64, report: Report) {
        let inner = self.inner.clone();
        inner.tracker.clone().spawn(async move {
            report::send(
                &inner.scheduler,
                session,
                task,
                epoch,
                &report,
                inner.config.report_backoff_max,
                &inner.give_up,
            )
            .await;
        });
    }

    /// Watches `session` (once): heartbeats its lease while it runs, stops it when
    /// the lease is gone, reports it when it ended.
    fn watch(&self, session: Session) {
        let inserted = self
            .inner
            .watched
            .lock()
            .map(|mut watched| watched.insert(session.id))
            .unwrap_or(false);
        if inserted {
            let this = self.clone();
            self.inner.tracker.spawn(async move {
                let id = session.id;
                this.watch_session(session).await;
                if let Ok(mut watched) = this.inner.watched.lock() {
                    watched.remove(&id);
                }
            });
        }
    }

    fn is_watched(&self, id: SessionId) -> bool {
        self.inner
            .watched
            .lock()
            .map(|w| w.contains(&id))
            .unwrap_or(false)
    }

    fn is_stale(&self, id: SessionId) -> bool {
        self.inner
            .stale
            .lock()
            .map(|s| s.contains(&id))
            .unwrap_or(false)
    }

    fn mark_stale(&self, id: SessionId) {
        if let Ok(mut stale) = self.inner.stale.lock() {
            stale.insert(id);
        }
    }

    async fn watch_session(&self, session: Session) {
        let inner = &self.inner;
        let (team, id, task, epoch) = (session.team_id, session.id, session.task_id, session.epoch);
        let mut tick = tokio::time::interval(
            inner
                .config
                .lease_heartbeat_interval
                .max(Duration::from_millis(10)),
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let ended = inner.sessions.ended(team, id);
        tokio::pin!(ended);
        let ended = loop {
            tokio::select! {
                ended = &mut ended => break ended,
                _ = tick.tick() => match inner.scheduler.heartbeat_lease(task, epoch).await {
                    Ok(()) => {}
                    Err(error) if lease_gone(&error) => {
                        tracing::info!(session_id = %id, task_id = %task, epoch, error = %error, "the task's lease is gone; stopping its session");
                        self.stop_stale(team, id, &error.message).await;
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(session_id = %id, task_id = %task, error = %error, "cannot heartbeat the task's lease");
                    }
                },
            }
        };
        let session = match ended {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(session_id = %id, error = %error, "cannot read an ended session");
                return;
            }
        };
        if self.is_stale(id) {
            return;
        }
        if let Some(report) = report::of_session(&session, inner.draining.load(Ordering::SeqCst)) {
            let accepted = report::send(
                &inner.scheduler,
                Some(id),
                task,
                epoch,
                &report,
                inner.config.report_backoff_max,
                &inner.give_up,
            )
            .await;
            // The task failed for good: the scheduler cancelled the rest of its plan
            // in the same transaction; here the plan's work is rolled back.
            if let (
                true,
                Report::Fail {
                    retryable: false,
                    message,
                    ..
                },
            ) = (accepted, &report)
                && let Ok(Some(plan)) = PlanSpec::of_payload(&session.payload)
            {
                let reason = format!("task {task} failed for good: {message}");
                self.roll_back(team, plan.id, &reason).await;
            }
        }
    }

    /// Stops `plan`'s sessions here and rolls its integration branch back (logging a
    /// failure: the plan's `failed` event tries again).
    async fn roll_back(&self, team: TeamId, plan: PlanId, reason: &str) {
        match self.inner.plans.rollback(team, plan, reason, false).await {
            Ok(done) if done.rolled_back => {
                tracing::info!(plan_id = %plan, reason, "rolled the plan back");
            }
            Ok(_) => {}
            Err(error) if error.code == ErrorCode::NotFound => {}
            Err(error) => {
                tracing::warn!(plan_id = %plan, error = %error, "cannot roll the plan back");
            }
        }
    }

    /// Consumes the scheduler's `plan.failed` and `plan.cancelled` events until
    /// `stop`: each plan with an open integration branch here is rolled back.
    async fn plan_events(self, stop: CancellationToken) {
        let root = godel_bus::subject::ROOT;
        let filters = vec![
            format!("{root}.team.*.plan.failed"),
            format!("{root}.team.*.plan.cancelled"),
        ];
        let durable = format!("orchestrator-plans-{}", self.inner.id);
        let mut backoff = Duration::from_millis(100);
        loop {
            let consumer = tokio::select! {
                consumer = self.inner.bus.consumer(ConsumerConfig::new(durable.clone(), filters.clone())) => consumer,
                () = stop.cancelled() => return,
            };
            let mut consumer = match consumer {
                Ok(consumer) => consumer,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in = ?backoff, "cannot consume plan events");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_RETRY);
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    next = consumer.next() => next,
                    () = stop.cancelled() => return,
                };
                match next {
                    Ok(Some(delivery)) => self.plan_event(delivery).await,
                    Ok(None) => return,
                    Err(error) => {
                        tracing::warn!(error = %error, "reading plan events failed; consuming again");
                        break;
                    }
                }
            }
        }
    }

    async fn plan_event(&self, delivery: Delivery) {
        let event = match godel_proto::cloudevent::decode::<PlanEvent>(&delivery.payload) {
            Ok(event) => event.data,
            Err(error) => {
                tracing::warn!(error = %error, subject = %delivery.subject, "dropping an unreadable plan event");
                ack(delivery).await;
                return;
            }
        };
        let (Ok(team), Ok(plan)) = (
            event.team_id.parse::<TeamId>(),
            event.plan_id.parse::<PlanId>(),
        ) else {
            ack(delivery).await;
            return;
        };
        let open = match self.inner.plans.integrations().get(team, plan).await {
            Ok(record) => record.state == crate::plans::IntegrationState::Open,
            Err(error) if error.code == ErrorCode::NotFound => false,
            Err(error) => {
                tracing::warn!(plan_id = %plan, error = %error, "cannot read a plan's integration");
                if let Err(error) = delivery.nak(Some(Duration::from_secs(1))).await {
                    tracing::warn!(error = %error, "cannot ask for a plan event again");
                }
                return;
            }
        };
        if open {
            let reason = if event.reason.is_empty() {
                format!("the plan ended {}", delivery.subject.event())
            } else {
                format!(
                    "the plan ended {}: {}",
                    delivery.subject.event(),
                    event.reason
                )
            };
            self.roll_back(team, plan, &reason).await;
        }
        ack(delivery).await;
    }

    /// Stops a session whose lease is gone (someone else owns its task now).
    async fn stop_stale(&self, team: TeamId, id: SessionId, why: &str) {
        self.mark_stale(id);
        let reason = format!("the task's lease is no longer held: {why}");
        if let Err(error) = self.inner.sessions.stop(team, id, &reason, false).await {
            tracing::warn!(session_id = %id, error = %error, "cannot stop a session whose lease is gone");
        }
    }

    async fn heartbeat_loop(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(
            self.inner
                .config
                .heartbeat_interval
                .max(Duration::from_millis(10)),
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.heartbeat().await,
                () = stop.cancelled() => return,
            }
        }
    }

    /// One registration heartbeat; registers again when the scheduler forgot us.
    async fn heartbeat(&self) {
        let inner = &self.inner;
        let _turn = inner.heartbeat_turn.lock().await;
        let active = u32::try_from(inner.sessions.live_count()).unwrap_or(u32::MAX);
        let draining = inner.draining.load(Ordering::SeqCst);
        match inner
            .scheduler
            .heartbeat(inner.config.capacity, active, draining)
            .await
        {
            Ok(true) => {}
            Ok(false) if !draining => {
                tracing::info!(orchestrator_id = %inner.id, "the scheduler forgot this orchestrator; registering again");
                if let Err(error) = inner.scheduler.register(&inner.config).await {
                    tracing::warn!(error = %error, "cannot register with the scheduler");
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(error = %error, "cannot heartbeat the scheduler"),
        }
    }

    async fn reconcile_loop(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(
            self.inner
                .config
                .reconcile_interval
                .max(Duration::from_millis(10)),
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(error) = self.reconcile().await {
                        tracing::warn!(error = %error, "reconciliation with the scheduler failed");
                    }
                }
                () = stop.cancelled() => return,
            }
        }
    }
}

async fn ack(delivery: Delivery) {
    if let Err(error) = delivery.ack().await {
        tracing::warn!(error = %error, "cannot ack a dispatch message");
    }
}
