//! The scheduler's lease API as intake uses it: a lazily connected gRPC client,
//! with the proto messages converted to what intake needs at this edge.

use std::time::Duration;

use godel_error::{Error, ErrorCode};
use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_types::{OrchestratorId, PlanId, ProfileId, TaskId, TeamId};
use tonic::transport::{Channel, Endpoint};

use crate::config::IntakeConfig;
use crate::session::RUNTIME;

/// How long one call to the scheduler may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A task as the scheduler reports it, reduced to what intake decides on.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerTask {
    pub team_id: TeamId,
    pub task_id: TaskId,
    pub task_type: String,
    pub payload_json: String,
    pub profile_id: Option<ProfileId>,
    /// The plan the task belongs to.
    pub plan_id: Option<PlanId>,
    pub epoch: u64,
    pub lease_owner: String,
    /// Leased or running: a lease is held (by `lease_owner`, at `epoch`).
    pub leased: bool,
}

impl SchedulerTask {
    /// Whether `orchestrator` holds this task's lease at `epoch`.
    pub fn held_by(&self, orchestrator: OrchestratorId, epoch: u64) -> bool {
        self.leased && self.epoch == epoch && self.lease_owner == orchestrator.to_string()
    }
}

/// Whether a refused call means the lease is gone (stale epoch, another owner, or
/// no such task) rather than a passing failure worth retrying.
pub(crate) fn lease_gone(error: &Error) -> bool {
    matches!(
        error.code,
        ErrorCode::FailedPrecondition | ErrorCode::NotFound
    )
}

/// The scheduler's `SchedulerService`, called as orchestrator `id`.
#[derive(Clone)]
pub(crate) struct Scheduler {
    client: SchedulerServiceClient<Channel>,
    id: OrchestratorId,
}

impl Scheduler {
    /// A client of the scheduler at `endpoint`; it connects on first use (and
    /// reconnects after a failure), so the orchestrator starts while the
    /// scheduler is down.
    pub fn new(endpoint: &str, id: OrchestratorId) -> Result<Self, Error> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| {
                Error::invalid_argument(
                    "intake.scheduler_endpoint",
                    format!("`{endpoint}` is not a valid endpoint: {e}"),
                )
            })?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            client: SchedulerServiceClient::new(channel),
            id,
        })
    }

    fn client(&self) -> SchedulerServiceClient<Channel> {
        self.client.clone()
    }

    /// Registers this orchestrator; returns the scheduler's lease duration.
    pub async fn register(&self, config: &IntakeConfig) -> Result<Option<Duration>, Error> {
        let response = self
            .client()
            .register_orchestrator(pb::RegisterOrchestratorRequest {
                orchestrator_id: self.id.to_string(),
                capacity: config.capacity,
                runtimes: vec![RUNTIME.to_owned()],
                labels: config.labels.clone().into_iter().collect(),
                endpoint: config.endpoint.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .await
            .map_err(Error::from)?
            .into_inner();
        Ok(response
            .lease_duration
            .and_then(|d| Duration::try_from(d).ok()))
    }

    /// Heartbeats the registration; false when the scheduler no longer knows this
    /// orchestrator (register again).
    pub async fn heartbeat(
        &self,
        capacity: u32,
        active: u32,
        draining: bool,
    ) -> Result<bool, Error> {
        let response = self
            .client()
            .heartbeat_orchestrator(pb::HeartbeatOrchestratorRequest {
                orchestrator_id: self.id.to_string(),
                capacity,
                active_sessions: active,
                draining,
            })
            .await
            .map_err(Error::from)?
            .into_inner();
        Ok(response.registered)
    }

    pub async fn get_task(&self, team: TeamId, task: TaskId) -> Result<SchedulerTask, Error> {
        let task = self
            .client()
            .get_task(pb::GetTaskRequest {
                team_id: team.to_string(),
                task_id: task.to_string(),
            })
            .await
            .map_err(Error::from)?
            .into_inner()
            .task
            .ok_or_else(|| Error::internal("the scheduler returned no task"))?;
        let state = task.state();
        Ok(SchedulerTask {
            team_id: team,
            task_id: task.id.parse().map_err(|_| {
                Error::internal(format!("the scheduler returned task id `{}`", task.id))
            })?,
            profile_id: task.profile_id.parse().ok(),
            plan_id: task.plan_id.parse().ok(),
            task_type: task.task_type,
            payload_json: task.payload_json,
            epoch: task.epoch,
            lease_owner: task.lease_owner,
            leased: matches!(state, pb::TaskState::Leased | pb::TaskState::Running),
        })
    }

    /// Extends the lease on `task` held at `epoch`.
    pub async fn heartbeat_lease(&self, task: TaskId, epoch: u64) -> Result<(), Error> {
        self.client()
            .heartbeat_lease(pb::HeartbeatLeaseRequest {
                orchestrator_id: self.id.to_string(),
                task_id: task.to_string(),
                epoch,
            })
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    pub async fn complete(
        &self,
        task: TaskId,
        epoch: u64,
        result_json: String,
    ) -> Result<(), Error> {
        self.client()
            .complete_task(pb::CompleteTaskRequest {
                orchestrator_id: self.id.to_string(),
                task_id: task.to_string(),
                epoch,
                result_json,
            })
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    /// Cancels every unfinished task of `team`'s plan `plan`.
    pub async fn cancel_plan(&self, team: TeamId, plan: PlanId, reason: &str) -> Result<(), Error> {
        self.client()
            .cancel_plan(pb::CancelPlanRequest {
                team_id: team.to_string(),
                plan_id: plan.to_string(),
                reason: reason.to_owned(),
            })
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    pub async fn fail(
        &self,
        task: TaskId,
        epoch: u64,
        code: &str,
        message: &str,
        retryable: bool,
    ) -> Result<(), Error> {
        self.client()
            .fail_task(pb::FailTaskRequest {
                orchestrator_id: self.id.to_string(),
                task_id: task.to_string(),
                epoch,
                error: message.to_owned(),
                code: code.to_owned(),
                retryable,
                retry_after: None,
            })
            .await
            .map_err(Error::from)?;
        Ok(())
    }
}
