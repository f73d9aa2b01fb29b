//! Level-triggered reconciliation of this orchestrator's sessions with the leases
//! the scheduler says it holds (DESIGN.md §3 invariant 5).
//!
//! Every pass reads the sessions this orchestrator recorded that have not ended
//! or ended within `intake.reconcile_lookback` (ended ones a watcher is reporting
//! are skipped) and asks the scheduler (`GetTask`) about each one's task. A task
//! the scheduler does not know is left alone (a session started through the API).
//! Then it converges:
//!
//! | session | lease held at its epoch | action |
//! |---|---|---|
//! | running here | yes | watch it unless watched (lease heartbeats, report at its end) |
//! | not ended, nothing runs it (left from before a restart) | yes | mark it `lost`, report it (retried elsewhere) |
//! | ended, report not accepted | yes | report it |
//! | not ended | no | stop it (it ends `cancelled`), report nothing |
//! | ended | no | nothing: the scheduler already moved on |
//!
//! A report the scheduler accepted ends the lease, so "lease held" is also what
//! tells an unreported session from a reported one: no local bookkeeping.

use godel_error::{Error, ErrorCode};

use super::{Intake, RECONCILE_BATCH};
use crate::session::SessionState;

impl Intake {
    /// One reconciliation pass.
    pub(super) async fn reconcile(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let now = chrono::Utc::now();
        let since = chrono::Duration::from_std(inner.config.reconcile_lookback)
            .ok()
            .and_then(|lookback| now.checked_sub_signed(lookback))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let sessions = inner
            .sessions
            .of_this_orchestrator(since, RECONCILE_BATCH)
            .await?;
        for session in sessions {
            let watched = self.is_watched(session.id);
            if self.is_stale(session.id) || (watched && session.state.is_terminal()) {
                continue;
            }
            let task = match inner
                .scheduler
                .get_task(session.team_id, session.task_id)
                .await
            {
                Ok(task) => task,
                Err(error) if error.code == ErrorCode::NotFound => continue,
                Err(error) => {
                    tracing::warn!(session_id = %session.id, error = %error, "cannot read a session's task; next pass");
                    continue;
                }
            };
            let held = task.held_by(inner.id, session.epoch);
            let live = inner.sessions.is_live(session.id);
            match (session.state.is_terminal(), held) {
                (false, false) => {
                    tracing::info!(session_id = %session.id, task_id = %session.task_id, "reconcile: the session's task is no longer ours; stopping it");
                    self.stop_stale(session.team_id, session.id, "found by reconciliation")
                        .await;
                }
                (false, true) if !live => {
                    // A session being started right now is not live yet: wait
                    // for its start to finish, then look again.
                    let _starting = inner.starting.lock().await;
                    if inner.sessions.is_live(session.id) || self.is_watched(session.id) {
                        continue;
                    }
                    tracing::info!(session_id = %session.id, task_id = %session.task_id, "reconcile: nothing runs this session; reporting it lost");
                    match inner
                        .sessions
                        .set_state(
                            session.id,
                            SessionState::Lost,
                            "no agent runs the session (the orchestrator restarted)",
                        )
                        .await
                    {
                        Ok(lost) => self.watch(lost),
                        Err(error) => {
                            tracing::warn!(session_id = %session.id, error = %error, "cannot mark a session lost; next pass");
                        }
                    }
                }
                (_, true) if !watched => self.watch(session),
                (_, true) => {}
                (true, false) => {}
            }
        }
        Ok(())
    }
}
