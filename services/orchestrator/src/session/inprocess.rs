//! The in-process runtime: the simulated agent run as a task of the orchestrator
//! instead of a process in a worktree — a lightweight session for load and for
//! measuring Godel's own per-session overhead. Chosen with `"runtime": "inprocess"`
//! in a `sim` session's payload.
//!
//! The session goes through the same states, event log, batching, usage totals and
//! limits as any other; only the agent differs: [`simulate`] writes its files into a
//! scratch directory of the session (not a git worktree: nothing is committed, the
//! result has no commit or diff) and its JSONL lines are parsed by the same parser
//! the process runtime uses. A stop interrupts it like SIGINT does the binary.

use std::io::Write;
use std::sync::Arc;

use clap::Parser;
use godel_error::Error;
use tokio::sync::mpsc;

use super::model::{LogBody, NewEvent, Session, SessionResult, SessionState};
use super::store::Change;
use super::{Inner, Live};
use crate::runtime::confine::ConfinementLevel;
use crate::runtime::event::{OutputStream, SessionEvent, parse_line};
use crate::runtime::sim_agent::{SimArgs, SimOutcome, simulate};

/// The session `runtime` of in-process sessions.
pub const RUNTIME: &str = "inprocess";

/// Whether `payload` asks for the in-process runtime.
pub(crate) fn requested(payload: &serde_json::Value) -> bool {
    payload.get("runtime").and_then(serde_json::Value::as_str) == Some(RUNTIME)
}

/// Feeds the simulated agent's output, line by line, to the session's event writer.
struct Lines {
    pending: Vec<u8>,
    tx: mpsc::UnboundedSender<SessionEvent>,
}

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            // A closed writer (the session is ending) drops what is left.
            let _ = self.tx.send(parse_line(OutputStream::Stdout, &text));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `session` (already `starting`) to its end in process.
pub(super) async fn run(
    inner: &Arc<Inner>,
    session: Session,
    live: &Arc<Live>,
) -> Result<(), Error> {
    let scratch = inner.config.worktrees_dir.join(session.id.to_string());
    let mut argv = vec![
        std::ffi::OsString::from("godel-sim-agent"),
        "--workdir".into(),
        scratch.clone().into_os_string(),
    ];
    argv.extend(super::adapter::sim_args(&session.payload)?);
    let args = match SimArgs::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) => {
            let message = format!("the simulated agent's flags are invalid: {e}");
            super::supervisor::fail(inner, &session, "agent_start_failed", message).await?;
            return Ok(());
        }
    };
    if let Err(e) = tokio::fs::create_dir_all(&scratch).await {
        let message = format!("cannot create the session's scratch directory: {e}");
        super::supervisor::fail(inner, &session, "workspace_failed", message).await?;
        return Ok(());
    }
    let started = NewEvent::own(LogBody::RuntimeStarted {
        runtime: RUNTIME.to_owned(),
        confinement: ConfinementLevel::None,
        branch: String::new(),
        base_commit: String::new(),
    });
    let change = Change {
        reason: "the simulated agent started in process".to_owned(),
        confinement: Some(ConfinementLevel::None),
        ..Change::default()
    };
    let session = inner
        .transition(session.id, SessionState::Running, change, vec![started])
        .await?;

    let (tx, rx) = mpsc::unbounded_channel::<SessionEvent>();
    let writer = tokio::spawn(super::supervisor::write_events(
        inner.clone(),
        session.clone(),
        rx,
        live.clone(),
        false,
    ));
    let mut lines = Lines {
        pending: Vec::new(),
        tx,
    };
    let cancel = live.cancel.clone();
    let limit = session.limits.max_duration;
    let ran = async {
        match limit {
            Some(limit) => {
                tokio::time::timeout(limit, simulate(&args, &mut lines, cancel.cancelled()))
                    .await
                    .ok()
            }
            None => Some(simulate(&args, &mut lines, cancel.cancelled()).await),
        }
    }
    .await;
    drop(lines);
    let session = match writer.await {
        Ok(written) => written?,
        Err(join) => {
            return Err(Error::internal(format!(
                "the session's event writer stopped: {join}"
            )));
        }
    };
    let _ = tokio::fs::remove_dir_all(&scratch).await;

    let (to, reason) = match ran {
        None => (
            SessionState::Failed,
            "the wall-clock limit was reached".to_owned(),
        ),
        Some(Err(e)) => (
            SessionState::Failed,
            format!("the simulated agent could not write: {e}"),
        ),
        Some(Ok(SimOutcome::Done)) => (SessionState::Succeeded, "succeeded".to_owned()),
        Some(Ok(SimOutcome::Failed)) => (
            SessionState::Failed,
            "the simulated agent failed as configured".to_owned(),
        ),
        Some(Ok(SimOutcome::Interrupted)) => match live.stop_request() {
            Some(request) => return super::supervisor::stopped(inner, &session, request).await,
            // Interrupted by nobody's stop: the writer ended it at a usage limit.
            None => (
                SessionState::Failed,
                "the session reached its usage limit".to_owned(),
            ),
        },
    };
    let change = Change {
        reason: reason.clone(),
        error: (to != SessionState::Succeeded).then(|| reason.clone()),
        result: Some(SessionResult {
            outcome: reason,
            ..SessionResult::default()
        }),
        ..Change::default()
    };
    inner.transition(session.id, to, change, Vec::new()).await?;
    Ok(())
}
