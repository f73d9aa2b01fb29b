//! How an ended session is reported to the scheduler: what the report is, and
//! sending it until the scheduler accepts it or says the lease is gone.

use std::time::Duration;

use godel_types::{SessionId, TaskId};
use tokio_util::sync::CancellationToken;

use super::scheduler::{Scheduler, lease_gone};
use crate::session::{Session, SessionState};

/// First pause before reporting again after a failed attempt; doubles up to the
/// configured maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What the scheduler is told about a task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Report {
    /// `CompleteTask` with this result JSON.
    Complete(String),
    /// `FailTask`.
    Fail {
        code: String,
        message: String,
        retryable: bool,
    },
}

impl Report {
    pub fn fail(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self::Fail {
            code: code.to_owned(),
            message: message.into(),
            retryable,
        }
    }
}

/// The report of an ended `session`; `None` while it runs. `draining`: this
/// orchestrator is shutting down, so a cancelled session was stopped by it and its
/// task is handed back to be retried elsewhere.
pub(crate) fn of_session(session: &Session, draining: bool) -> Option<Report> {
    let error = || {
        session
            .error
            .clone()
            .unwrap_or_else(|| session.state.as_str().to_owned())
    };
    match session.state {
        SessionState::Succeeded => Some(Report::Complete(result_json(session))),
        SessionState::Failed => {
            // A failed gate, a merge conflict, a closed plan: a retry would repeat it.
            let permanent = session
                .result
                .as_ref()
                .and_then(|r| r.integration.as_ref())
                .and_then(|i| i.permanent_failure.clone());
            Some(match permanent {
                Some(code) => Report::fail(&code, error(), false),
                None => Report::fail("session_failed", error(), true),
            })
        }
        SessionState::Cancelled if draining => Some(Report::fail(
            "orchestrator_shutdown",
            "the orchestrator shut down while the session ran",
            true,
        )),
        // Stopped on purpose (by an operator): not retried.
        SessionState::Cancelled => Some(Report::fail("session_cancelled", error(), false)),
        SessionState::Lost => Some(Report::fail(
            "session_lost",
            session.error.clone().unwrap_or_else(|| {
                "the session was lost: no agent runs it (its orchestrator restarted)".to_owned()
            }),
            true,
        )),
        SessionState::Pending
        | SessionState::Starting
        | SessionState::Running
        | SessionState::AwaitingApproval => None,
    }
}

/// The result of a succeeded session, as stored with its task.
pub(crate) fn result_json(session: &Session) -> String {
    let result = session.result.clone().unwrap_or_default();
    let diff = result.diff.map(|diff| {
        serde_json::json!({
            "files_changed": diff.files_changed,
            "insertions": diff.insertions,
            "deletions": diff.deletions,
            "files": diff.files.iter().map(|f| serde_json::json!({
                "path": f.path,
                "insertions": f.insertions,
                "deletions": f.deletions,
            })).collect::<Vec<_>>(),
        })
    });
    serde_json::json!({
        "session_id": session.id.to_string(),
        "outcome": result.outcome,
        "branch": session.branch,
        "base_commit": session.base_commit,
        "commit": result.commit,
        "diff": diff,
        "gate": result.integration.as_ref().and_then(|i| i.gate.as_ref()).map(|g| serde_json::json!({
            "command": g.command,
            "passed": g.passed,
            "exit_code": g.exit_code,
            "timed_out": g.timed_out,
            "summary": g.summary,
        })),
        "merge": result.integration.as_ref().and_then(|i| i.merge.as_ref()).map(|m| serde_json::json!({
            "branch": m.branch,
            "commit": m.commit,
            "conflicts": m.conflicts,
        })),
        "usage": {
            "input_tokens": session.usage.input_tokens,
            "output_tokens": session.usage.output_tokens,
            "cost_micro_usd": session.usage.cost_micro_usd,
        },
    })
    .to_string()
}

/// Sends `report` for `task` at `epoch` until the scheduler accepts it (true) or
/// refuses it for good because the lease is gone (false), backing off between
/// failed attempts; gives up (false) when `give_up` is cancelled.
pub(crate) async fn send(
    scheduler: &Scheduler,
    session: Option<SessionId>,
    task: TaskId,
    epoch: u64,
    report: &Report,
    max_backoff: Duration,
    give_up: &CancellationToken,
) -> bool {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let sent = match report {
            Report::Complete(result) => scheduler.complete(task, epoch, result.clone()).await,
            Report::Fail {
                code,
                message,
                retryable,
            } => scheduler.fail(task, epoch, code, message, *retryable).await,
        };
        match sent {
            Ok(()) => {
                tracing::info!(task_id = %task, epoch, session_id = ?session, report = ?kind(report), "reported the task to the scheduler");
                return true;
            }
            Err(error) if lease_gone(&error) => {
                tracing::info!(task_id = %task, epoch, error = %error, "the scheduler refused the report: the lease is gone");
                return false;
            }
            Err(error) => {
                tracing::warn!(task_id = %task, epoch, error = %error, retry_in = ?backoff, "cannot report the task to the scheduler; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = give_up.cancelled() => {
                tracing::warn!(task_id = %task, epoch, "gave up reporting the task; its lease will expire");
                return false;
            }
        }
        backoff = (backoff * 2).min(max_backoff.max(FIRST_BACKOFF));
    }
}

fn kind(report: &Report) -> &'static str {
    match report {
        Report::Complete(_) => "complete",
        Report::Fail {
            retryable: true, ..
        } => "fail_retryable",
        Report::Fail { .. } => "fail",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::worktree::{DiffSummary, FileStat};
    use crate::session::{Repository, SessionLimits, SessionResult, Usage};
    use godel_types::{OrchestratorId, TeamId};

    fn session(state: SessionState, error: Option<&str>) -> Session {
        let now = chrono::Utc::now();
        Session {
            id: SessionId::new(),
            team_id: TeamId::new(),
            task_id: TaskId::new(),
            epoch: 2,
            profile_id: None,
            adapter: "sim".into(),
            runtime: "process".into(),
            repository: Repository {
                url: "/r".into(),
                git_ref: None,
            },
            branch: Some("godel/x".into()),
            base_commit: Some("base".into()),
            orchestrator_id: OrchestratorId::new(),
            state,
            confinement: None,
            task_type: "t".into(),
            prompt: String::new(),
            payload: serde_json::json!({}),
            limits: SessionLimits::default(),
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            error: error.map(str::to_owned),
            result: Some(SessionResult {
                outcome: "succeeded".into(),
                commit: Some("abc".into()),
                diff: Some(DiffSummary {
                    files_changed: 1,
                    insertions: 3,
                    deletions: 0,
                    files: vec![FileStat {
                        path: "a.txt".into(),
                        insertions: Some(3),
                        deletions: Some(0),
                    }],
                }),
                ..SessionResult::default()
            }),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                cost_micro_usd: 7,
            },
            last_event_offset: 0,
        }
    }

    #[test]
    fn each_end_maps_to_its_report() {
        let Some(Report::Complete(json)) =
            of_session(&session(SessionState::Succeeded, None), false)
        else {
            panic!("a succeeded session completes its task");
        };
        let result: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(result["commit"], "abc");
        assert_eq!(result["diff"]["files"][0]["path"], "a.txt");
        assert_eq!(result["usage"]["cost_micro_usd"], 7);
        assert_eq!(
            of_session(&session(SessionState::Failed, Some("boom")), false),
            Some(Report::fail("session_failed", "boom", true))
        );
        let mut gated = session(SessionState::Failed, Some("the gate failed"));
        if let Some(result) = gated.result.as_mut() {
            result.integration = Some(crate::session::Integration {
                permanent_failure: Some("gate_failed".into()),
                ..Default::default()
            });
        }
        assert_eq!(
            of_session(&gated, false),
            Some(Report::fail("gate_failed", "the gate failed", false))
        );
        let shutdown = of_session(&session(SessionState::Cancelled, Some("x")), true);
        assert!(
            matches!(shutdown, Some(Report::Fail { ref code, retryable: true, .. }) if code == "orchestrator_shutdown")
        );
        assert_eq!(
            of_session(&session(SessionState::Cancelled, Some("stopped")), false),
            Some(Report::fail("session_cancelled", "stopped", false))
        );
        let lost = of_session(&session(SessionState::Lost, None), false);
        assert!(
            matches!(lost, Some(Report::Fail { ref code, retryable: true, .. }) if code == "session_lost")
        );
        for running in [
            SessionState::Pending,
            SessionState::Running,
            SessionState::AwaitingApproval,
        ] {
            assert_eq!(of_session(&session(running, None), false), None);
        }
    }
}
