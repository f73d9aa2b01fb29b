//! The gRPC `OrchestratorService` over [`Sessions`], and the conversions between
//! sessions and their proto form (also used for the published events).
//!
//! Every call is checked against the caller its access token proves (the service
//! installs `godel_identity::CallerLayer`): the request's `team_id` names the team,
//! and the caller must hold, there, `tasks:create` to start a session,
//! `sessions:read` to get, list or stream them, `sessions:stop` to stop one,
//! `tasks:cancel` to roll a plan back, `tasks:read` to read a plan's integration
//! branch. A session (or plan integration) of another team is not found. The provider-key RPCs are a separate
//! `ProviderKeyService` ([`keys`], `provider_keys:manage`).

mod keys;

use std::pin::Pin;

use godel_error::Error;
use godel_identity::{Permission, caller_from_request};
use godel_proto::common::v1 as godel_common;
use godel_proto::convert::{
    from_optional_duration, parse_id, parse_optional_id, to_optional_timestamp, to_timestamp,
};
use godel_proto::orchestrator::v1 as pb;
use godel_proto::orchestrator::v1::orchestrator_service_server::OrchestratorService;
use godel_proto::orchestrator::v1::session_event::{self, Body};
use godel_types::{SessionId, TaskId, TeamId};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::plans::PlanControl;
use crate::runtime::event::ChangeKind;
use crate::runtime::worktree::DiffSummary;
pub use keys::ProviderKeyGrpc;

use crate::session::{
    ListFilter, LogBody, LoggedEvent, Repository, Session, SessionLimits, SessionState, Sessions,
    StartSpec, Usage,
};

/// Events buffered per open stream before the reader waits for the client.
const STREAM_BUFFER: usize = 256;

/// Serves the orchestrator's gRPC API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OrchestratorGrpc {
    sessions: Sessions,
    closing: CancellationToken,
    plans: PlanControl,
}

impl OrchestratorGrpc {
    /// Serves `sessions`; open event streams end (with `unavailable`, to be resumed
    /// from the next offset) once `closing` is cancelled, so they never hold up the
    /// server's drain.
    pub fn new(sessions: Sessions, closing: CancellationToken) -> Self {
        let plans = PlanControl::new(sessions.clone(), None);
        Self {
            sessions,
            closing,
            plans,
        }
    }

    /// Rolls plans back with `plans` (which cancels them at its scheduler).
    pub(crate) fn with_plans(mut self, plans: PlanControl) -> Self {
        self.plans = plans;
        self
    }
}

/// The team `team_id` names, once the caller proved to hold `permission` there.
fn team<T>(request: &Request<T>, team_id: &str, permission: Permission) -> Result<TeamId, Status> {
    let caller = caller_from_request(request)?;
    let team = parse_id("team_id", team_id)?;
    caller.require(team, permission)?;
    Ok(team)
}

fn session_id(id: &str) -> Result<SessionId, Error> {
    parse_id("session_id", id)
}

/// The proto form of a session state.
pub(crate) fn state_to_pb(state: SessionState) -> pb::SessionState {
    match state {
        SessionState::Pending => pb::SessionState::Pending,
        SessionState::Starting => pb::SessionState::Starting,
        SessionState::Running => pb::SessionState::Running,
        SessionState::AwaitingApproval => pb::SessionState::AwaitingApproval,
        SessionState::Succeeded => pb::SessionState::Succeeded,
        SessionState::Failed => pb::SessionState::Failed,
        SessionState::Cancelled => pb::SessionState::Cancelled,
        SessionState::Lost => pb::SessionState::Lost,
    }
}

fn state_from_pb(field: &str, value: i32) -> Result<SessionState, Error> {
    let state = pb::SessionState::try_from(value).unwrap_or(pb::SessionState::Unspecified);
    Ok(match state {
        pb::SessionState::Pending => SessionState::Pending,
        pb::SessionState::Starting => SessionState::Starting,
        pb::SessionState::Running => SessionState::Running,
        pb::SessionState::AwaitingApproval => SessionState::AwaitingApproval,
        pb::SessionState::Succeeded => SessionState::Succeeded,
        pb::SessionState::Failed => SessionState::Failed,
        pb::SessionState::Cancelled => SessionState::Cancelled,
        pb::SessionState::Lost => SessionState::Lost,
        pb::SessionState::Unspecified => {
            return Err(Error::invalid_argument(
                field,
                format!("`{field}` holds an unknown session state {value}"),
            ));
        }
    })
}

pub(crate) fn usage_to_pb(usage: &Usage) -> godel_common::Usage {
    godel_common::Usage {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cache_read_tokens: 0,
        cost_micro_usd: usage.cost_micro_usd,
    }
}

fn diff_to_pb(diff: &DiffSummary) -> pb::DiffSummary {
    pb::DiffSummary {
        files_changed: u32::try_from(diff.files_changed).unwrap_or(u32::MAX),
        insertions: diff.insertions,
        deletions: diff.deletions,
        files: diff
            .files
            .iter()
            .map(|f| pb::diff_summary::FileStat {
                path: f.path.clone(),
                insertions: f.insertions,
                deletions: f.deletions,
            })
            .collect(),
    }
}

/// The proto form of a session.
pub(crate) fn session_to_pb(s: &Session) -> pb::Session {
    pb::Session {
        id: s.id.to_string(),
        team_id: s.team_id.to_string(),
        task_id: s.task_id.to_string(),
        epoch: s.epoch,
        profile_id: s.profile_id.map(|p| p.to_string()).unwrap_or_default(),
        adapter: s.adapter.clone(),
        runtime: s.runtime.clone(),
        state: state_to_pb(s.state).into(),
        repository: Some(pb::Repository {
            url: s.repository.url.clone(),
            git_ref: s.repository.git_ref.clone().unwrap_or_default(),
            push_branch: String::new(),
        }),
        orchestrator_id: s.orchestrator_id.to_string(),
        created_at: Some(to_timestamp(s.created_at)),
        started_at: to_optional_timestamp(s.started_at),
        finished_at: to_optional_timestamp(s.finished_at),
        usage: Some(usage_to_pb(&s.usage)),
        last_event_offset: s.last_event_offset,
        error: s.error.clone().unwrap_or_default(),
        confinement: s
            .confinement
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        branch: s.branch.clone().unwrap_or_default(),
        result: s.result.as_ref().map(|r| pb::SessionResult {
            exit_code: r.exit_code.unwrap_or(-1),
            exit_signal: r.exit_signal.clone().unwrap_or_default(),
            outcome: r.outcome.clone(),
            commit: r.commit.clone().unwrap_or_default(),
            diff: r.diff.as_ref().map(diff_to_pb),
        }),
    }
}

fn change_kind_to_pb(kind: ChangeKind) -> session_event::ChangeKind {
    match kind {
        ChangeKind::Added => session_event::ChangeKind::Added,
        ChangeKind::Modified => session_event::ChangeKind::Modified,
        ChangeKind::Deleted => session_event::ChangeKind::Deleted,
        ChangeKind::Renamed => session_event::ChangeKind::Renamed,
    }
}

/// The proto form of a logged event of a session of `team` working on `task`.
pub(crate) fn event_to_pb(team: TeamId, task: TaskId, event: &LoggedEvent) -> pb::SessionEvent {
    let body = match &event.body {
        LogBody::AssistantMessage { text } => {
            Body::AssistantMessage(session_event::AssistantMessage { text: text.clone() })
        }
        LogBody::ToolCall {
            call_id,
            name,
            input_json,
        } => Body::ToolCall(session_event::ToolCall {
            call_id: call_id.clone(),
            name: name.clone(),
            input_json: input_json.clone(),
        }),
        LogBody::ToolResult {
            call_id,
            output,
            is_error,
        } => Body::ToolResult(session_event::ToolResult {
            call_id: call_id.clone(),
            output: output.clone(),
            is_error: *is_error,
        }),
        LogBody::FileChange {
            path,
            change,
            old_path,
            lines_added,
            lines_removed,
        } => Body::FileChange(session_event::FileChange {
            path: path.clone(),
            kind: change_kind_to_pb(*change).into(),
            old_path: old_path.clone().unwrap_or_default(),
            lines_added: *lines_added,
            lines_removed: *lines_removed,
        }),
        LogBody::Usage {
            input_tokens,
            output_tokens,
            cost_micro_usd,
        } => Body::Usage(godel_common::Usage {
            input_tokens: *input_tokens,
            output_tokens: *output_tokens,
            cache_read_tokens: 0,
            cost_micro_usd: *cost_micro_usd,
        }),
        LogBody::AgentState { state, reason } => Body::AgentState(session_event::AgentState {
            state: state.as_str().to_owned(),
            reason: reason.clone(),
        }),
        LogBody::Error { code, message } => Body::Error(session_event::Error {
            code: code.clone(),
            message: message.clone(),
        }),
        LogBody::Raw { stream, text } => Body::Raw(session_event::Raw {
            stream: stream.as_str().to_owned(),
            text: text.clone(),
        }),
        LogBody::StateChange { from, to, reason } => Body::State(session_event::StateChange {
            from: from.map_or(0, |s| state_to_pb(s) as i32),
            to: state_to_pb(*to).into(),
            reason: reason.clone(),
        }),
        LogBody::RuntimeStarted {
            runtime,
            confinement,
            branch,
            base_commit,
        } => Body::RuntimeStarted(session_event::RuntimeStarted {
            runtime: runtime.clone(),
            confinement: confinement.as_str().to_owned(),
            branch: branch.clone(),
            base_commit: base_commit.clone(),
        }),
    };
    pb::SessionEvent {
        session_id: event.session_id.to_string(),
        team_id: team.to_string(),
        task_id: task.to_string(),
        offset: event.offset,
        occurred_at: Some(to_timestamp(event.occurred_at)),
        line: event.raw.clone(),
        body: Some(body),
    }
}

fn start_spec(team_id: TeamId, req: pb::StartSessionRequest) -> Result<StartSpec, Error> {
    let repository = req.repository.unwrap_or_default();
    let payload: serde_json::Value = if req.payload_json.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&req.payload_json).map_err(|e| {
            Error::invalid_argument("payload_json", format!("payload_json is not JSON: {e}"))
        })?
    };
    if !payload.is_object() {
        return Err(Error::invalid_argument(
            "payload_json",
            "payload_json must be a JSON object",
        ));
    }
    let limits = req.limits.unwrap_or_default();
    Ok(StartSpec {
        team_id,
        task_id: parse_id("task_id", &req.task_id)?,
        epoch: req.epoch,
        profile_id: parse_optional_id("profile_id", &req.profile_id)?,
        adapter: (!req.adapter.is_empty()).then_some(req.adapter),
        repository: Repository {
            url: repository.url,
            git_ref: (!repository.git_ref.is_empty()).then_some(repository.git_ref),
        },
        prompt: req.prompt,
        task_type: req.task_type,
        payload,
        limits: SessionLimits {
            max_duration: from_optional_duration(
                "limits.max_duration",
                limits.max_duration.as_ref(),
            )?,
            max_cost_micro_usd: limits.max_cost_micro_usd,
            max_tokens: limits.max_tokens,
        },
    })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SessionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    async fn start_session(
        &self,
        request: Request<pb::StartSessionRequest>,
    ) -> Result<Response<pb::StartSessionResponse>, Status> {
        let team = team(
            &request,
            &request.get_ref().team_id,
            Permission::TasksCreate,
        )?;
        let spec = start_spec(team, request.into_inner())?;
        let started = self.sessions.start(spec).await?;
        Ok(Response::new(pb::StartSessionResponse {
            session: Some(session_to_pb(&started.session)),
            created: started.created,
        }))
    }

    async fn stop_session(
        &self,
        request: Request<pb::StopSessionRequest>,
    ) -> Result<Response<pb::StopSessionResponse>, Status> {
        let team = team(
            &request,
            &request.get_ref().team_id,
            Permission::SessionsStop,
        )?;
        let req = request.into_inner();
        let session = self
            .sessions
            .stop(team, session_id(&req.session_id)?, &req.reason, req.force)
            .await?;
        Ok(Response::new(pb::StopSessionResponse {
            session: Some(session_to_pb(&session)),
        }))
    }

    async fn steer_session(
        &self,
        request: Request<pb::SteerSessionRequest>,
    ) -> Result<Response<pb::SteerSessionResponse>, Status> {
        // Steering directs the agent's work, as starting it with a prompt does.
        let team = team(
            &request,
            &request.get_ref().team_id,
            Permission::TasksCreate,
        )?;
        let req = request.into_inner();
        let session = self
            .sessions
            .steer(team, session_id(&req.session_id)?, &req.message)
            .await?;
        Ok(Response::new(pb::SteerSessionResponse {
            session: Some(session_to_pb(&session)),
        }))
    }

    async fn rollback_plan(
        &self,
        request: Request<pb::RollbackPlanRequest>,
    ) -> Result<Response<pb::RollbackPlanResponse>, Status> {
        let team = team(
            &request,
            &request.get_ref().team_id,
            Permission::PlansCancel,
        )?;
        let req = request.into_inner();
        let plan = parse_id("plan_id", &req.plan_id)?;
        let reason = if req.reason.trim().is_empty() {
            "rolled back on request".to_owned()
        } else {
            req.reason
        };
        let done = self.plans.rollback(team, plan, &reason, true).await?;
        Ok(Response::new(pb::RollbackPlanResponse {
            rolled_back: done.rolled_back,
            branch: done.integration.branch,
            base_commit: done.integration.base_commit,
        }))
    }

    async fn get_plan_integration(
        &self,
        request: Request<pb::GetPlanIntegrationRequest>,
    ) -> Result<Response<pb::GetPlanIntegrationResponse>, Status> {
        let team = team(&request, &request.get_ref().team_id, Permission::PlansRead)?;
        let req = request.into_inner();
        let plan = parse_id("plan_id", &req.plan_id)?;
        let record = self.plans.integrations().get(team, plan).await?;
        Ok(Response::new(pb::GetPlanIntegrationResponse {
            branch: record.branch,
            base_commit: record.base_commit,
            head_commit: record.head_commit,
            merged_task_ids: record
                .merged_task_ids
                .iter()
                .map(ToString::to_string)
                .collect(),
            state: record.state.as_str().to_owned(),
            repository: record.repository_url,
        }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let team = team(
            &request,
            &request.get_ref().team_id,
            Permission::SessionsRead,
        )?;
        let req = request.into_inner();
        let session = self
            .sessions
            .get(team, session_id(&req.session_id)?)
            .await?;
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(session_to_pb(&session)),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let team = team(
            &request,
            &request.get_ref().team_id,
            Permission::SessionsRead,
        )?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        let filter = ListFilter {
            states: req
                .states
                .iter()
                .enumerate()
                .map(|(i, s)| state_from_pb(&format!("states[{i}]"), *s))
                .collect::<Result<_, _>>()?,
            task: parse_optional_id("task_id", &req.task_id)?,
            after: parse_optional_id("page.page_token", &page.page_token)?,
        };
        let size = usize::try_from(page.page_size).unwrap_or(usize::MAX);
        let page = self.sessions.list(team, &filter, size).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: page.sessions.iter().map(session_to_pb).collect(),
            page: Some(godel_common::PageResponse {
                next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
            }),
        }))
    }

    type StreamSessionEventsStream = EventStream;

    async fn stream_session_events(
        &self,
        request: Request<pb::StreamSessionEventsRequest>,
    ) -> Result<Response<Self::StreamSessionEventsStream>, Status> {
        let team = team(
            &request,
            &request.get_ref().team_id,
            Permission::SessionsRead,
        )?;
        let req = request.into_inner();
        let id = session_id(&req.session_id)?;
        // Fails here (not inside the stream) when the session is not the team's.
        let session = self.sessions.get(team, id).await?;
        let (events_tx, mut events_rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let sessions = self.sessions.clone();
        let task = session.task_id;
        let read = tokio::spawn(async move {
            sessions
                .stream(team, id, req.from_offset, req.follow, events_tx)
                .await
        });
        let closing = self.closing.clone();
        tokio::spawn(async move {
            let mut next = req.from_offset.max(1);
            loop {
                let event = tokio::select! {
                    event = events_rx.recv() => event,
                    () = closing.cancelled() => {
                        let status = Status::unavailable(format!(
                            "the orchestrator is shutting down; resume from offset {next}"
                        ));
                        let _ = out_tx.send(Err(status)).await;
                        return;
                    }
                };
                let Some(event) = event else { break };
                next = event.offset + 1;
                if out_tx
                    .send(Ok(event_to_pb(team, task, &event)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // The reader is done (its sender dropped): report how it ended after
            // every event it sent.
            let error = match read.await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => Status::from(error),
                Err(join) => Status::internal(format!("the event stream stopped: {join}")),
            };
            let _ = out_tx.send(Err(error)).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use godel_proto::convert::to_duration;

    #[test]
    fn states_round_trip() {
        for state in SessionState::ALL {
            assert_eq!(
                state_from_pb("s", state_to_pb(state) as i32).unwrap(),
                state
            );
        }
        assert!(state_from_pb("s", 0).is_err());
        assert!(state_from_pb("s", 99).is_err());
    }

    #[test]
    fn durations_convert() {
        assert_eq!(
            from_optional_duration("d", Some(&to_duration(std::time::Duration::from_secs(3))))
                .unwrap(),
            Some(std::time::Duration::from_secs(3))
        );
    }
}
