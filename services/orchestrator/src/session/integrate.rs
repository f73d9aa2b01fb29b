//! What follows an agent's success once its work is committed: the quality gate
//! (always for a standalone task that has one; for a plan task when the plan asks
//! for it), then, for a plan task, the merge of the task's branch onto the plan's
//! integration branch. Each step is logged as an orchestrator tool call and result
//! (`quality_gate`, `plan_merge`); what they did is kept with the session's result.

use godel_error::{Error, ErrorCode};

use super::model::{GateSummary, Integration, LogBody, MergeSummary, NewEvent, Session};
use super::{Inner, Live};
use crate::plans::PlanSpec;
use crate::runtime::gate::{self, Gate};
use crate::runtime::worktree::Worktree;
use crate::runtime::worktree::integrate::{Merge, integration_branch};

/// How much of a failed gate's output goes into the task's error.
const ERROR_TAIL_BYTES: usize = 4 * 1024;

/// Why integrating the work failed.
#[derive(Debug)]
pub(super) struct Failure {
    pub code: &'static str,
    pub message: String,
    /// A retry would fail the same way: the task fails for good.
    pub permanent: bool,
}

impl Failure {
    fn permanent(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            permanent: true,
        }
    }

    fn passing(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            permanent: false,
        }
    }
}

/// What integrating did: the summary kept with the result (`None` when nothing ran),
/// the session after the events logged, and the failure, if any.
pub(super) struct Integrated {
    pub session: Session,
    pub integration: Option<Integration>,
    pub failure: Option<Failure>,
}

/// Runs the gate and the merge for `session`'s committed work in `worktree`.
pub(super) async fn integrate(
    inner: &Inner,
    session: Session,
    live: &Live,
    worktree: &Worktree,
    plan: Option<&PlanSpec>,
) -> Result<Integrated, Error> {
    let mut session = session;
    let mut integration = Integration::default();
    let gate = match wanted_gate(worktree, &session.payload, plan) {
        Ok(gate) => gate,
        Err(error) => {
            let failure = Failure::permanent("gate_invalid", error.message);
            return Ok(Integrated {
                session,
                integration: None,
                failure: Some(failure),
            });
        }
    };
    if let Some(gate) = gate {
        let (next, summary, failure) = run_gate(inner, session, live, worktree, &gate).await?;
        session = next;
        integration.gate = Some(summary);
        if let Some(failure) = failure {
            return Ok(done(session, integration, Some(failure)));
        }
    }
    if let Some(plan) = plan {
        let (next, summary, failure) = merge(inner, session, worktree, plan).await?;
        session = next;
        integration.merge = summary;
        if let Some(failure) = failure {
            return Ok(done(session, integration, Some(failure)));
        }
    }
    Ok(done(session, integration, None))
}

fn done(session: Session, integration: Integration, failure: Option<Failure>) -> Integrated {
    let empty = integration == Integration::default();
    Integrated {
        session,
        integration: (!empty || failure.is_some()).then_some(integration),
        failure,
    }
}

/// The gate to run: a plan task's only when its plan asks for one; a standalone
/// task's whenever the payload or the repository configures one.
fn wanted_gate(
    worktree: &Worktree,
    payload: &serde_json::Value,
    plan: Option<&PlanSpec>,
) -> Result<Option<Gate>, Error> {
    if plan.is_some_and(|p| !p.run_gate) {
        return Ok(None);
    }
    gate::gate_for(&worktree.path, payload)
}

async fn run_gate(
    inner: &Inner,
    session: Session,
    live: &Live,
    worktree: &Worktree,
    gate: &Gate,
) -> Result<(Session, GateSummary, Option<Failure>), Error> {
    const CALL: &str = "godel_gate";
    let input = serde_json::json!({
        "command": gate.command,
        "timeout": godel_config::duration::format(gate.timeout),
    });
    let call = NewEvent::own(LogBody::ToolCall {
        call_id: CALL.to_owned(),
        name: "quality_gate".to_owned(),
        input_json: input.to_string(),
    });
    let session = super::supervisor::append_now(inner, session, vec![call]).await?;
    let home = inner.home(session.id).join("gate");
    let outcome = gate::run(
        gate,
        &worktree.path,
        &home,
        inner.config.landlock,
        &live.cancel,
    )
    .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            let message = format!(
                "cannot run the quality gate `{}`: {}",
                gate.command,
                godel_error::chain(&error)
            );
            let result = NewEvent::own(LogBody::ToolResult {
                call_id: CALL.to_owned(),
                output: message.clone(),
                is_error: true,
            });
            let session = super::supervisor::append_now(inner, session, vec![result]).await?;
            let summary = GateSummary {
                command: gate.command.clone(),
                passed: false,
                exit_code: None,
                timed_out: false,
                summary: message.clone(),
                output: String::new(),
            };
            return Ok((
                session,
                summary,
                Some(Failure::passing("gate_error", message)),
            ));
        }
    };
    let line = if outcome.passed {
        format!("the quality gate `{}` passed", gate.command)
    } else {
        outcome.summary(gate)
    };
    let result = NewEvent::own(LogBody::ToolResult {
        call_id: CALL.to_owned(),
        output: format!("{line}\n{}", outcome.output),
        is_error: !outcome.passed,
    });
    let session = super::supervisor::append_now(inner, session, vec![result]).await?;
    let summary = GateSummary {
        command: gate.command.clone(),
        passed: outcome.passed,
        exit_code: outcome.exit_code,
        timed_out: outcome.timed_out,
        summary: line.clone(),
        output: outcome.output.clone(),
    };
    let failure = (!outcome.passed).then(|| {
        let tail = tail(&outcome.output, ERROR_TAIL_BYTES);
        Failure::permanent("gate_failed", format!("{line}; its output ends:\n{tail}"))
    });
    Ok((session, summary, failure))
}

async fn merge(
    inner: &Inner,
    session: Session,
    worktree: &Worktree,
    plan: &PlanSpec,
) -> Result<(Session, Option<MergeSummary>, Option<Failure>), Error> {
    const CALL: &str = "godel_merge";
    let branch = integration_branch(plan.id);
    let input = serde_json::json!({
        "plan_id": plan.id.to_string(),
        "branch": branch,
        "task_branch": worktree.branch,
    });
    let call = NewEvent::own(LogBody::ToolCall {
        call_id: CALL.to_owned(),
        name: "plan_merge".to_owned(),
        input_json: input.to_string(),
    });
    let session = super::supervisor::append_now(inner, session, vec![call]).await?;
    let merged = inner
        .integrations
        .merge(session.team_id, plan.id, session.task_id, &worktree.branch)
        .await;
    let (summary, output, failure) = match merged {
        Ok(Merge::Merged { commit }) | Ok(Merge::AlreadyMerged { head: commit }) => (
            Some(MergeSummary {
                branch: branch.clone(),
                commit: Some(commit.clone()),
                conflicts: Vec::new(),
            }),
            format!("merged onto {branch}: {commit}"),
            None,
        ),
        Ok(Merge::Conflict { files }) => {
            let message = format!(
                "merging task {} onto {branch} conflicts in: {}",
                session.task_id,
                files.join(", ")
            );
            (
                Some(MergeSummary {
                    branch: branch.clone(),
                    commit: None,
                    conflicts: files,
                }),
                message.clone(),
                Some(Failure::permanent("merge_conflict", message)),
            )
        }
        Err(error)
            if matches!(
                error.code,
                ErrorCode::FailedPrecondition | ErrorCode::NotFound
            ) =>
        {
            let message = format!("cannot merge onto {branch}: {}", error.message);
            (
                None,
                message.clone(),
                Some(Failure::permanent("plan_closed", message)),
            )
        }
        Err(error) => {
            let message = format!("cannot merge onto {branch}: {}", error.message);
            (
                None,
                message.clone(),
                Some(Failure::passing("merge_failed", message)),
            )
        }
    };
    let result = NewEvent::own(LogBody::ToolResult {
        call_id: CALL.to_owned(),
        output,
        is_error: failure.is_some(),
    });
    let session = super::supervisor::append_now(inner, session, vec![result]).await?;
    Ok((session, summary, failure))
}

/// The last `max` bytes of `text` (on a character boundary).
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    &text[cut..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_cut_on_character_boundaries() {
        assert_eq!(tail("abc", 5), "abc");
        assert_eq!(tail("abcdef", 2), "ef");
        assert_eq!(tail("aé", 1), "");
    }
}
