//! Runs one session end to end on the worktree runtime: worktree → confined agent
//! process → its normalized events into the log (in batches) → judged outcome →
//! commit and diff summary (or the worktree kept) → final state.

use std::sync::Arc;

use godel_error::Error;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::model::{LogBody, NewEvent, Session, SessionResult, SessionState};
use super::store::Change;
use super::{Inner, Live, LlmAccess, Steer, StopRequest, adapter};
use crate::runtime::event::{AgentState, EventBody, OutputStream, SessionEvent, Verdict};
use crate::runtime::process::{self, AgentProcess, RunEnd, RunReport};
use crate::runtime::reaper::AgentHandle;
use crate::runtime::worktree::{RepoSource, Worktree};
use godel_types::SessionId;

/// Runs `session` and records how it ended; the session's live handle is dropped
/// at the end, which ends the live tail of its streams.
pub(crate) async fn supervise(
    inner: Arc<Inner>,
    session: Session,
    live: Arc<Live>,
    superseded: Vec<CancellationToken>,
) {
    let id = session.id;
    // Whatever happens to this task (even a panic), the session stops being live.
    let _ended = Ended {
        inner: inner.clone(),
        id,
        live: live.clone(),
    };
    if let Err(error) = run(&inner, session, &live, superseded).await {
        tracing::error!(session_id = %id, error = %error, "session supervisor failed");
        let change = Change {
            reason: "the orchestrator failed to run the session".to_owned(),
            error: Some(error.message.clone()),
            ..Change::default()
        };
        let event = NewEvent::own(LogBody::Error {
            code: "orchestrator_error".to_owned(),
            message: error.message.clone(),
        });
        if let Err(error) = inner
            .transition(id, SessionState::Failed, change, vec![event])
            .await
        {
            tracing::error!(session_id = %id, error = %error, "cannot record a failed session");
        }
    }
    let home = inner.home(id);
    if let Err(error) = tokio::fs::remove_dir_all(&home).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(session_id = %id, path = %home.display(), error = %error, "cannot remove the agent's home");
    }
}

/// Removes a session from the live ones and marks it done when dropped.
struct Ended {
    inner: Arc<Inner>,
    id: SessionId,
    live: Arc<Live>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if let Ok(mut map) = self.inner.live.lock() {
            map.remove(&self.id);
        }
        self.live.done.cancel();
    }
}

/// Fails the session with an error event `code`.
pub(super) async fn fail(
    inner: &Inner,
    session: &Session,
    code: &str,
    message: String,
) -> Result<Session, Error> {
    let event = NewEvent::own(LogBody::Error {
        code: code.to_owned(),
        message: message.clone(),
    });
    let change = Change {
        reason: message.clone(),
        error: Some(message),
        ..Change::default()
    };
    inner
        .transition(session.id, SessionState::Failed, change, vec![event])
        .await
}

/// Ends a session that was stopped before its agent ran.
pub(super) async fn stopped(
    inner: &Inner,
    session: &Session,
    request: StopRequest,
) -> Result<(), Error> {
    let change = Change {
        reason: request.reason.clone(),
        error: Some(request.reason),
        ..Change::default()
    };
    inner
        .transition(session.id, SessionState::Cancelled, change, Vec::new())
        .await?;
    Ok(())
}

async fn run(
    inner: &Arc<Inner>,
    session: Session,
    live: &Arc<Live>,
    superseded: Vec<CancellationToken>,
) -> Result<(), Error> {
    let session = inner
        .transition(
            session.id,
            SessionState::Starting,
            Change {
                reason: "preparing the workspace".to_owned(),
                ..Change::default()
            },
            Vec::new(),
        )
        .await?;
    // Sessions of older epochs of the task hold its branch until they end.
    for older in superseded {
        tokio::select! {
            () = older.cancelled() => {}
            () = live.cancel.cancelled() => break,
        }
    }
    if let Some(request) = live.stop_request() {
        return stopped(inner, &session, request).await;
    }
    if session.runtime == super::inprocess::RUNTIME {
        return super::inprocess::run(inner, session, live).await;
    }

    let source = if session.repository.url.starts_with('/') {
        RepoSource::Local(session.repository.url.clone().into())
    } else {
        RepoSource::Url(session.repository.url.clone())
    };
    // A plan task starts from its plan's integration branch (created at the plan's
    // base by the first of its tasks), so it sees the work merged before it.
    let plan = match crate::plans::PlanSpec::of_payload(&session.payload) {
        Ok(plan) => plan,
        Err(error) => {
            fail_for_good(inner, &session, "invalid_payload", error.message, None).await?;
            return Ok(());
        }
    };
    let start_ref = match &plan {
        None => session.repository.git_ref.clone(),
        Some(plan) => match open_plan(inner, &session, plan, &source).await {
            Ok(start_ref) => Some(start_ref),
            Err(error)
                if error.code == godel_error::ErrorCode::FailedPrecondition
                    || error.code == godel_error::ErrorCode::NotFound =>
            {
                let message = format!("the plan cannot take work: {}", error.message);
                fail_for_good(inner, &session, "plan_closed", message, None).await?;
                return Ok(());
            }
            Err(error) => {
                let message = format!(
                    "cannot prepare the plan's integration branch: {}",
                    error.message
                );
                fail(inner, &session, "workspace_failed", message).await?;
                return Ok(());
            }
        },
    };
    let worktree = match inner
        .worktrees
        .create(session.id, session.task_id, &source, start_ref.as_deref())
        .await
    {
        Ok(worktree) => worktree,
        Err(error) => {
            let message = format!(
                "cannot prepare the workspace: {}",
                godel_error::chain(&error)
            );
            fail(inner, &session, "workspace_failed", message).await?;
            return Ok(());
        }
    };
    let home = inner.home(session.id);
    let llm = match llm_access(inner, &session).await {
        Ok(llm) => llm,
        Err(error) => {
            keep(inner, &worktree).await;
            let message = format!("cannot mint the session's LLM token: {}", error.message);
            fail(inner, &session, "agent_start_failed", message).await?;
            return Ok(());
        }
    };
    let spawned = adapter::agent_spec(&inner.config, &session, &worktree.path, &home, llm.as_ref())
        .and_then(|spec| {
            AgentProcess::spawn(&spec)
                .map(|process| (spec, process))
                .map_err(|e| Error::failed_precondition(godel_error::chain(&e)))
        });
    let (spec, process) = match spawned {
        Ok(spawned) => spawned,
        Err(error) => {
            keep(inner, &worktree).await;
            let message = format!("cannot start the agent: {}", error.message);
            fail(inner, &session, "agent_start_failed", message).await?;
            return Ok(());
        }
    };
    let confinement = process.confinement();
    let started = NewEvent::own(LogBody::RuntimeStarted {
        runtime: session.runtime.clone(),
        confinement,
        branch: worktree.branch.clone(),
        base_commit: worktree.base_commit.clone(),
    });
    let change = Change {
        reason: format!("the agent started (confinement: {})", confinement.as_str()),
        branch: Some((worktree.branch.clone(), worktree.base_commit.clone())),
        confinement: Some(confinement),
        agent: AgentHandle::of_leader(process.pgid()),
        ..Change::default()
    };
    let session = match inner
        .transition(session.id, SessionState::Running, change, vec![started])
        .await
    {
        Ok(session) => session,
        Err(error) => {
            drop(process);
            keep(inner, &worktree).await;
            return Err(error);
        }
    };

    // The agent's events go through an unbounded channel (the runtime calls back
    // synchronously) to a writer that appends whatever has arrived in one batch.
    let (tx, rx) = mpsc::unbounded_channel::<SessionEvent>();
    let metered = llm.is_some();
    let writer = tokio::spawn(write_events(
        inner.clone(),
        session,
        rx,
        live.clone(),
        metered,
    ));
    // An agent that can be steered gets a channel to its stdin while it runs.
    let steer = spec.protocol.steer_command("").map(|_| {
        let (stdin, rx) = mpsc::unbounded_channel();
        if let Ok(mut steer) = live.steer.lock() {
            *steer = Some(Steer {
                protocol: spec.protocol.clone(),
                stdin,
            });
        }
        rx
    });
    let report = process::run_steered(
        process,
        &spec,
        &live.cancel,
        &live.force,
        steer,
        move |event| {
            let _ = tx.send(event.clone());
        },
    )
    .await;
    if let Ok(mut steer) = live.steer.lock() {
        *steer = None;
    }
    let session = match writer.await {
        Ok(Ok(session)) => session,
        Ok(Err(error)) => {
            keep(inner, &worktree).await;
            return Err(error);
        }
        Err(join) => {
            keep(inner, &worktree).await;
            return Err(Error::internal(format!(
                "the session's event writer stopped: {join}"
            )));
        }
    };
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            keep(inner, &worktree).await;
            fail(inner, &session, "agent_failed", godel_error::chain(&error)).await?;
            return Ok(());
        }
    };
    finish(inner, &session, live, &worktree, &report, plan.as_ref()).await
}

/// Opens `plan`'s integration branch in the session's repository; returns the ref
/// the session's worktree starts from.
async fn open_plan(
    inner: &Inner,
    session: &Session,
    plan: &crate::plans::PlanSpec,
    source: &RepoSource,
) -> Result<String, Error> {
    let (repo, _) = inner
        .worktrees
        .repository(source, Some(&plan.base))
        .await
        .map_err(|e| Error::unavailable(godel_error::chain(&e)))?;
    inner
        .integrations
        .open(session.team_id, plan, &session.repository.url, &repo)
        .await?;
    Ok(format!(
        "refs/heads/{}",
        crate::runtime::worktree::integrate::integration_branch(plan.id)
    ))
}

/// Fails the session with an error event `code`, for good: its task is not retried.
async fn fail_for_good(
    inner: &Inner,
    session: &Session,
    code: &'static str,
    message: String,
    result: Option<SessionResult>,
) -> Result<(), Error> {
    let mut result = result.unwrap_or_else(|| SessionResult {
        outcome: message.clone(),
        ..SessionResult::default()
    });
    result
        .integration
        .get_or_insert_with(Default::default)
        .permanent_failure = Some(code.to_owned());
    let event = NewEvent::own(LogBody::Error {
        code: code.to_owned(),
        message: message.clone(),
    });
    let change = Change {
        reason: message.clone(),
        error: Some(message),
        result: Some(result),
        ..Change::default()
    };
    inner
        .transition(session.id, SessionState::Failed, change, vec![event])
        .await?;
    Ok(())
}

/// Appends `events` to `session`'s log now (outside a state change); returns the
/// session after them.
pub(super) async fn append_now(
    inner: &Inner,
    session: Session,
    events: Vec<NewEvent>,
) -> Result<Session, Error> {
    let id = session.id;
    let session = append_batch(inner, session, events, None).await?;
    if let Some(live) = inner.live_handle(id) {
        live.bump();
    }
    Ok(session)
}

/// With the LLM proxy running: a token for `session`, expiring at its wall-clock
/// limit (and revoked when it ends), and the proxy's address.
///
/// The simulated agent calls no model: it gets no token, and the usage it reports
/// is the session's usage.
async fn llm_access(inner: &Inner, session: &Session) -> Result<Option<LlmAccess>, Error> {
    let Some(base_url) = inner.llm_proxy.get() else {
        return Ok(None);
    };
    if session.adapter == "sim" {
        return Ok(None);
    }
    let limit = session
        .limits
        .max_duration
        .unwrap_or(inner.config.default_max_duration);
    let expires_at = chrono::TimeDelta::from_std(limit)
        .ok()
        .and_then(|limit| chrono::Utc::now().checked_add_signed(limit))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let token = crate::proxy::tokens::mint(inner.db.conn(), session, expires_at).await?;
    Ok(Some(LlmAccess {
        base_url: base_url.clone(),
        token,
    }))
}

/// Appends the agent's events in batches until the channel closes; moves the
/// session between running and awaiting-approval as the agent reports it. Returns
/// the session as it is after the last batch.
///
/// When the session's model calls go through the LLM proxy (`metered`), the proxy
/// records each call's usage from the provider's own figures; the usage the agent
/// reports about itself is then kept as a raw event (its line unchanged), so it is
/// neither counted twice nor able to understate what the team pays.
pub(super) async fn write_events(
    inner: Arc<Inner>,
    mut session: Session,
    mut rx: mpsc::UnboundedReceiver<SessionEvent>,
    live: Arc<Live>,
    metered: bool,
) -> Result<Session, Error> {
    let max_batch = inner.config.max_event_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let mut waiting = None;
        let events: Vec<NewEvent> = batch
            .drain(..)
            .map(|event| {
                if let EventBody::State { state, .. } = &event.body {
                    waiting = Some(*state == AgentState::AwaitingApproval);
                }
                let body = match event.body {
                    EventBody::Usage { .. } if metered => EventBody::Raw {
                        stream: OutputStream::Stdout,
                        text: event.raw.clone(),
                    },
                    body => body,
                };
                NewEvent {
                    body: body.into(),
                    raw: event.raw,
                }
            })
            .collect();
        let to = match (session.state, waiting) {
            (SessionState::Running, Some(true)) => Some(SessionState::AwaitingApproval),
            (SessionState::AwaitingApproval, Some(false)) => Some(SessionState::Running),
            _ => None,
        };
        session = append_batch(&inner, session, events, to).await?;
        live.bump();
        let limits = session.limits;
        let tokens = session.usage.input_tokens + session.usage.output_tokens;
        let over = (limits.max_tokens > 0 && tokens > limits.max_tokens)
            || (limits.max_cost_micro_usd > 0
                && session.usage.cost_micro_usd > limits.max_cost_micro_usd);
        if over && !live.cancel.is_cancelled() {
            tracing::info!(session_id = %session.id, "session reached its usage limit");
            live.cancel.cancel();
        }
    }
    Ok(session)
}

/// Appends `events` (and moves the session to `to`, when given) in one transaction.
async fn append_batch(
    inner: &Inner,
    mut session: Session,
    events: Vec<NewEvent>,
    to: Option<SessionState>,
) -> Result<Session, Error> {
    let (_write, txn) = inner.begin().await?;
    let now = chrono::Utc::now();
    let mut logged = super::store::append(&txn, &mut session, events, now).await?;
    let mut state_event = None;
    if let Some(to) = to {
        let from = session.state;
        let reason = match to {
            SessionState::AwaitingApproval => "the agent waits for approval",
            _ => "the agent resumed",
        };
        let change = Change {
            reason: reason.to_owned(),
            ..Change::default()
        };
        let (next, more) =
            super::store::transition(&txn, &session, to, change, Vec::new(), now).await?;
        session = next;
        logged.extend(more);
        state_event = Some(super::events::state_event(
            &session,
            Some(from),
            reason,
            now,
        )?);
    }
    let mut outbox = logged
        .iter()
        .map(|event| super::events::activity_event(&session, event))
        .collect::<Result<Vec<_>, _>>()?;
    outbox.extend(state_event);
    inner.commit(txn, &outbox).await?;
    Ok(session)
}

/// Records how the run ended: committed and succeeded, or failed / cancelled with
/// the worktree kept for inspection.
async fn finish(
    inner: &Inner,
    session: &Session,
    live: &Live,
    worktree: &Worktree,
    report: &RunReport,
    plan: Option<&crate::plans::PlanSpec>,
) -> Result<(), Error> {
    let (exit_code, exit_signal) = exit_of(report);
    let mut result = SessionResult {
        exit_code,
        exit_signal,
        ..SessionResult::default()
    };
    let stop = live.stop_request();
    let (to, reason) = match (&report.verdict, report.end) {
        // A stop nobody asked for is the writer's: a usage limit was reached.
        (_, RunEnd::Cancelled) => match stop {
            Some(request) => (SessionState::Cancelled, request.reason),
            None => (
                SessionState::Failed,
                "the session reached its usage limit".to_owned(),
            ),
        },
        (Verdict::Succeeded, RunEnd::Exited) => (SessionState::Succeeded, "succeeded".to_owned()),
        (Verdict::Failed { reason }, _) => (SessionState::Failed, reason.clone()),
        (Verdict::Succeeded, RunEnd::WallClock) => (
            SessionState::Failed,
            "the wall-clock limit was reached".to_owned(),
        ),
    };
    result.outcome = reason.clone();
    let mut extra = Vec::new();
    let mut session = session.clone();
    let mut to = to;
    let mut reason = reason;
    if to == SessionState::Succeeded {
        let committed = async {
            let commit = inner.worktrees.commit(worktree).await?;
            let diff = inner.worktrees.diff_summary(worktree).await?;
            Ok::<_, crate::runtime::worktree::WorktreeError>((commit, diff))
        }
        .await;
        match committed {
            Ok((commit, diff)) => {
                result.commit = commit;
                result.diff = Some(diff);
            }
            Err(error) => {
                keep(inner, worktree).await;
                let message = format!("cannot commit the work: {}", godel_error::chain(&error));
                result.outcome = message.clone();
                extra.push(NewEvent::own(LogBody::Error {
                    code: "commit_failed".to_owned(),
                    message: message.clone(),
                }));
                let change = Change {
                    reason: message.clone(),
                    error: Some(message),
                    result: Some(result),
                    ..Change::default()
                };
                inner
                    .transition(session.id, SessionState::Failed, change, extra)
                    .await?;
                return Ok(());
            }
        }
        let integrated =
            super::integrate::integrate(inner, session.clone(), live, worktree, plan).await?;
        session = integrated.session;
        result.integration = integrated.integration;
        if let Some(request) = live.stop_request() {
            // Stopped while the gate or the merge ran.
            keep(inner, worktree).await;
            to = SessionState::Cancelled;
            result.outcome = request.reason.clone();
            reason = request.reason;
        } else if let Some(failure) = integrated.failure {
            keep(inner, worktree).await;
            result.outcome = failure.message.clone();
            if failure.permanent {
                return fail_for_good(inner, &session, failure.code, failure.message, Some(result))
                    .await;
            }
            extra.push(NewEvent::own(LogBody::Error {
                code: failure.code.to_owned(),
                message: failure.message.clone(),
            }));
            let change = Change {
                reason: failure.message.clone(),
                error: Some(failure.message),
                result: Some(result),
                ..Change::default()
            };
            inner
                .transition(session.id, SessionState::Failed, change, extra)
                .await?;
            return Ok(());
        } else if let Err(error) = inner.worktrees.remove(worktree).await {
            tracing::warn!(session_id = %session.id, path = %worktree.path.display(), error = %godel_error::chain(&error), "cannot remove the worktree of a finished session");
        }
    } else {
        keep(inner, worktree).await;
    }
    let change = Change {
        reason: reason.clone(),
        error: (to != SessionState::Succeeded).then_some(reason),
        result: Some(result),
        ..Change::default()
    };
    // An agent that ended while awaiting approval resumes first (succeeded only
    // follows running).
    if to == SessionState::Succeeded && session.state == SessionState::AwaitingApproval {
        inner
            .transition(
                session.id,
                SessionState::Running,
                Change {
                    reason: "the agent resumed".to_owned(),
                    ..Change::default()
                },
                Vec::new(),
            )
            .await?;
    }
    inner.transition(session.id, to, change, extra).await?;
    Ok(())
}

/// Keeps a worktree by the cleanup policy (logging a failure to do so).
async fn keep(inner: &Inner, worktree: &Worktree) {
    if let Err(error) = inner.worktrees.finish(worktree, false).await {
        tracing::warn!(path = %worktree.path.display(), error = %godel_error::chain(&error), "cannot record a kept worktree");
    }
}

/// The exit code, or the name of the signal that killed the agent.
fn exit_of(report: &RunReport) -> (Option<i32>, Option<String>) {
    use std::os::unix::process::ExitStatusExt;
    let Some(status) = report.exit else {
        return (None, None);
    };
    let signal = status
        .signal()
        .and_then(|s| Signal::try_from(s).ok())
        .map(|s| s.as_str().to_owned());
    (status.code(), signal)
}
