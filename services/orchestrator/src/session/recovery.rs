//! What an orchestrator does about the sessions a previous run of it left behind
//! (issue 4, "reconciliation"), and the sweep of workspaces nothing accounts for.
//!
//! - [`Sessions::recover`] runs once at start, before work is taken: every session
//!   this orchestrator recorded that has not ended has no supervisor any more (the
//!   last run died: a crash, `kill -9`, an OOM kill). Its agent's process group,
//!   recorded when the agent started with a guard against a reused process id
//!   ([`crate::runtime::reaper`]), is killed if it still runs; the session is
//!   marked `lost`; its worktree is kept for `keep_failed_for` (detached from the
//!   task's branch, so a retry can take the branch) and its agent home removed.
//!   Work intake's reconciliation then reports each lost session to the scheduler,
//!   which retries its task once more (a lost session is a retryable failure).
//! - [`Sessions::sweep_workspaces`] runs at start and every `sweep_interval`: it
//!   removes kept worktrees whose time is up, worktrees of sessions that are
//!   unknown to the store or ended more than `keep_failed_for` ago (with `git
//!   worktree prune` in their repositories), and agent homes of sessions that do not
//!   run here. A session that has not ended is never swept: it may belong to
//!   another orchestrator sharing the directories.

use std::time::Duration;

use chrono::Utc;
use godel_error::Error;
use godel_types::SessionId;

use super::model::{LogBody, NewEvent, Session, SessionState};
use super::{Sessions, store};
use crate::runtime::reaper::Reaped;
use crate::runtime::worktree::WorktreeManager;

/// Most unended sessions one recovery pass reads.
const RECOVER_BATCH: usize = 10_000;

/// What [`Sessions::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Sessions marked lost.
    pub lost: Vec<SessionId>,
    /// Processes killed in orphaned agents' process groups.
    pub killed: usize,
}

/// What [`Sessions::sweep_workspaces`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub worktrees: usize,
    pub homes: usize,
}

impl Sessions {
    /// Stops the agents of sessions a previous run of this orchestrator left
    /// behind and marks those sessions lost (see the module documentation). Call
    /// once at start, before any session starts.
    pub async fn recover(&self) -> Result<Recovered, Error> {
        let inner = &self.inner;
        let unended = store::of_orchestrator(
            inner.db.conn(),
            inner.orchestrator_id,
            chrono::DateTime::<Utc>::MAX_UTC,
            RECOVER_BATCH,
        )
        .await?;
        let mut recovered = Recovered::default();
        for session in unended
            .into_iter()
            .filter(|s| !s.state.is_terminal() && !self.is_live(s.id))
        {
            let killed = self.recover_one(&session).await?;
            recovered.killed += killed;
            recovered.lost.push(session.id);
        }
        if !recovered.lost.is_empty() {
            tracing::warn!(
                orchestrator_id = %inner.orchestrator_id,
                sessions = recovered.lost.len(),
                killed = recovered.killed,
                "recovered sessions left by a previous run of this orchestrator: marked lost"
            );
        }
        Ok(recovered)
    }

    /// Recovers one session; returns how many processes of its agent were killed.
    async fn recover_one(&self, session: &Session) -> Result<usize, Error> {
        let inner = &self.inner;
        let agent = store::agent_of(inner.db.conn(), session.id).await?;
        let (killed, what) = match &agent {
            None => (0, "no agent had been started".to_owned()),
            Some(agent) => match agent.kill().await {
                Reaped::Gone => (0, "its agent was no longer running".to_owned()),
                Reaped::Killed(n) => (
                    n,
                    format!(
                        "its orphaned agent was killed (process group {}, {n} processes)",
                        agent.pgid
                    ),
                ),
                Reaped::Survivors(n) => {
                    tracing::error!(session_id = %session.id, pgid = agent.pgid, survivors = n, "an orphaned agent's processes outlived SIGKILL");
                    (
                        0,
                        format!(
                            "its orphaned agent was killed but {n} processes of group {} remain",
                            agent.pgid
                        ),
                    )
                }
            },
        };
        let reason = format!("the orchestrator restarted while the session ran; {what}");
        tracing::info!(session_id = %session.id, task_id = %session.task_id, state = session.state.as_str(), "{reason}");
        let change = store::Change {
            reason: reason.clone(),
            error: Some(reason.clone()),
            ..store::Change::default()
        };
        let event = NewEvent::own(LogBody::Error {
            code: "session_lost".to_owned(),
            message: reason,
        });
        inner
            .transition(session.id, SessionState::Lost, change, vec![event])
            .await?;
        self.release_workspace(session).await;
        Ok(killed)
    }

    /// Keeps a recovered session's worktree by the cleanup policy (letting go of
    /// the task's branch) or, when it cannot be kept, removes it; removes the
    /// agent's home.
    async fn release_workspace(&self, session: &Session) {
        let inner = &self.inner;
        let worktrees = &inner.worktrees;
        if let Some(worktree) = worktrees
            .orphaned(
                session.id,
                session.task_id,
                session.branch.clone(),
                session.base_commit.clone(),
            )
            .await
        {
            let kept = if worktree.repo.as_os_str().is_empty() {
                false
            } else {
                match worktrees.finish(&worktree, false).await {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::warn!(session_id = %session.id, error = %godel_error::chain(&error), "cannot keep a lost session's worktree; removing it");
                        false
                    }
                }
            };
            if !kept && let Err(error) = worktrees.remove_stray(session.id).await {
                tracing::warn!(session_id = %session.id, error = %godel_error::chain(&error), "cannot remove a lost session's worktree");
            }
        }
        remove_home(&inner.home(session.id)).await;
    }

    /// Removes worktrees and agent homes nothing accounts for (see the module
    /// documentation).
    pub async fn sweep_workspaces(&self) -> Result<Swept, Error> {
        let inner = &self.inner;
        let worktrees = &inner.worktrees;
        let io = |error: crate::runtime::worktree::WorktreeError| {
            Error::unavailable(format!(
                "cannot sweep workspaces: {}",
                godel_error::chain(&error)
            ))
        };
        let mut swept = Swept {
            worktrees: worktrees.sweep().await.map_err(io)?.len(),
            homes: 0,
        };
        let keep = chrono::Duration::from_std(worktrees.config().keep_failed_for)
            .unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        for id in WorktreeManager::session_dirs(&worktrees.config().worktrees_dir)
            .await
            .map_err(io)?
        {
            if self.is_live(id) {
                continue;
            }
            let stray = match store::load(inner.db.conn(), id, None, false).await? {
                None => true,
                Some(session) => session
                    .finished_at
                    .filter(|_| session.state.is_terminal())
                    .is_some_and(|at| at.checked_add_signed(keep).is_none_or(|until| until <= now)),
            };
            // Looked again: a session may have started meanwhile.
            if stray && !self.is_live(id) {
                match worktrees.remove_stray(id).await {
                    Ok(()) => swept.worktrees += 1,
                    Err(error) => {
                        tracing::warn!(session_id = %id, error = %godel_error::chain(&error), "cannot remove a stray worktree");
                    }
                }
            }
        }
        for id in WorktreeManager::session_dirs(&inner.config.homes_dir)
            .await
            .map_err(io)?
        {
            if !self.is_live(id) {
                remove_home(&inner.home(id)).await;
                swept.homes += 1;
            }
        }
        if swept != Swept::default() {
            tracing::info!(
                worktrees = swept.worktrees,
                homes = swept.homes,
                "swept stray workspaces"
            );
        }
        Ok(swept)
    }

    /// Sweeps workspaces every `interval` until `stop` is cancelled.
    pub async fn sweep_loop(&self, interval: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the start's sweep runs before this loop.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(error) = self.sweep_workspaces().await {
                        tracing::warn!(error = %error, "the workspace sweep failed");
                    }
                }
                () = stop.cancelled() => return,
            }
        }
    }
}

async fn remove_home(home: &std::path::Path) {
    if let Err(error) = tokio::fs::remove_dir_all(home).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %home.display(), error = %error, "cannot remove an agent's home");
    }
}
