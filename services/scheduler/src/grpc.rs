//! The gRPC `SchedulerService` over the [`Queue`] and the [`Registry`].
//!
//! Until the auth issue lands, the caller's team is the request's `team_id` field:
//! nothing checks yet that the caller belongs to it (nor that a caller asking for
//! every team's queue stats is a service or an operator). Orchestrator calls are
//! proven by the lease owner and the epoch.

mod intents;
mod profiles;

use std::collections::BTreeMap;

use godel_error::Error;
use godel_proto::common::v1 as godel_common;
use godel_proto::convert::{
    from_duration, from_timestamp, parse_id, parse_ids, parse_optional_id, to_duration,
    to_timestamp,
};
use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_server::SchedulerService;
use godel_types::{OrchestratorId, PlanId, TaskId, TeamId};
use tonic::{Request, Response, Status};

use crate::coalesce::Coalescer;
use crate::queue::{
    COUNTED_STATES, Completion, DeadLetter, Failure, NewPlan, NewTask, Page, Plan, PlanDetail,
    PlanTask, Queue, Submitted, Task, TaskError, TaskState,
};
use crate::registry::{Registration, Registry};

/// Serves the scheduler's gRPC API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SchedulerGrpc {
    queue: Queue,
    registry: Registry,
    /// Completions from concurrent `CompleteTask` calls, written together.
    completions: Coalescer<Completion, Task>,
    /// Tasks from concurrent `SubmitTask` calls, written together.
    submissions: Coalescer<(TeamId, NewTask), Submitted>,
    profiles: crate::profiles::Profiles,
    /// How intents are planned (`PlanIntent`).
    planning: intents::Planning,
}

impl SchedulerGrpc {
    /// The API over `queue` and `registry`; starts the submission and completion
    /// writers (so it must be called inside a Tokio runtime).
    pub fn new(queue: Queue, registry: Registry) -> Self {
        let writer = queue.clone();
        let completions =
            Coalescer::spawn("completion", 2, queue.config().write_batch, move |batch| {
                let queue = writer.clone();
                async move { queue.complete_many(batch).await }
            });
        let writer = queue.clone();
        let submissions =
            Coalescer::spawn("submission", 2, queue.config().write_batch, move |batch| {
                let queue = writer.clone();
                async move { queue.submit_group(batch).await }
            });
        Self {
            profiles: crate::profiles::Profiles::new(queue.db().clone()),
            planning: intents::Planning::new(&crate::config::PlannerConfig::default()),
            queue,
            registry,
            completions,
            submissions,
        }
    }

    /// Plans intents with `config` (the LLM planner, when it names one, and the plan
    /// bounds) instead of the defaults.
    #[must_use]
    pub fn with_planner(mut self, config: &crate::config::PlannerConfig) -> Self {
        self.planning = intents::Planning::new(config);
        self
    }

    /// Fails unless `task` is leased to `orchestrator` (or was, for a repeated
    /// completion); the epoch the queue checks next is the real fence.
    async fn check_owner(&self, task: TaskId, orchestrator: OrchestratorId) -> Result<(), Error> {
        let current = self.queue.get_any(task).await?;
        if current.lease_owner != Some(orchestrator) {
            return Err(Error::failed_precondition(format!(
                "task {task} is not leased to orchestrator {orchestrator}"
            )));
        }
        Ok(())
    }
}

fn team(team_id: &str) -> Result<TeamId, Error> {
    parse_id("team_id", team_id)
}

fn task_id(task_id: &str) -> Result<TaskId, Error> {
    parse_id("task_id", task_id)
}

fn orchestrator(orchestrator_id: &str) -> Result<OrchestratorId, Error> {
    parse_id("orchestrator_id", orchestrator_id)
}

fn page_args(page: Option<&godel_common::PageRequest>) -> Result<(Option<TaskId>, usize), Error> {
    let Some(page) = page else {
        return Ok((None, 0));
    };
    let after = parse_optional_id("page.page_token", &page.page_token)?;
    Ok((after, usize::try_from(page.page_size).unwrap_or(usize::MAX)))
}

fn page_response<T>(page: &Page<T>) -> godel_common::PageResponse {
    godel_common::PageResponse {
        next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// A submitted spec as the queue takes it; errors name `<prefix>.<field>`.
fn new_task(prefix: &str, spec: Option<&pb::TaskSpec>) -> Result<NewTask, Error> {
    let spec =
        spec.ok_or_else(|| Error::invalid_argument(prefix, format!("{prefix} is required")))?;
    let field = |name: &str| format!("{prefix}.{name}");
    let payload: serde_json::Value = serde_json::from_str(&spec.payload_json).map_err(|e| {
        Error::invalid_argument(
            field("payload_json"),
            format!("payload_json is not JSON: {e}"),
        )
    })?;
    if !payload.is_object() {
        return Err(Error::invalid_argument(
            field("payload_json"),
            "payload_json must be a JSON object",
        ));
    }
    let priority = match spec.priority {
        0 => None,
        p => Some(u8::try_from(p).ok().filter(|p| *p <= 100).ok_or_else(|| {
            Error::invalid_argument(
                field("priority"),
                format!("priority must be between 1 and 100, got {p}"),
            )
        })?),
    };
    Ok(NewTask {
        task_type: spec.task_type.clone(),
        priority,
        payload,
        idempotency_key: (!spec.idempotency_key.is_empty()).then(|| spec.idempotency_key.clone()),
        max_attempts: (spec.max_attempts != 0).then_some(spec.max_attempts),
        plan_id: None,
        not_before: spec
            .not_before
            .as_ref()
            .map(|t| from_timestamp(&field("not_before"), t))
            .transpose()?,
        labels: spec.labels.clone().into_iter().collect(),
        profile_id: parse_optional_id(&field("profile_id"), &spec.profile_id)?,
    })
}

fn task_to_pb(t: &Task) -> pb::Task {
    pb::Task {
        id: t.id.to_string(),
        team_id: t.team_id.to_string(),
        plan_id: t.plan_id.map(|p| p.to_string()).unwrap_or_default(),
        plan_key: t.plan_key.clone().unwrap_or_default(),
        task_type: t.task_type.clone(),
        priority: u32::from(t.priority),
        payload_json: t.payload.to_string(),
        idempotency_key: t.idempotency_key.clone().unwrap_or_default(),
        state: t.state.to_proto().into(),
        epoch: t.epoch,
        attempts: t.attempts,
        max_attempts: t.max_attempts,
        lease_owner: t.lease_owner.map(|o| o.to_string()).unwrap_or_default(),
        lease_expires_at: t.lease_expires_at.map(to_timestamp),
        not_before: Some(to_timestamp(t.not_before)),
        created_at: Some(to_timestamp(t.created_at)),
        updated_at: Some(to_timestamp(t.updated_at)),
        last_error: t.last_error.clone().unwrap_or_default(),
        result_json: t.result.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        profile_id: t.profile_id.map(|p| p.to_string()).unwrap_or_default(),
        labels: t.labels.clone().into_iter().collect(),
    }
}

fn error_to_pb(e: &TaskError) -> pb::TaskError {
    pb::TaskError {
        code: e.code.clone(),
        orchestrator_id: e.orchestrator_id.map(|o| o.to_string()).unwrap_or_default(),
        message: e.message.clone(),
        attempt: e.attempt,
        epoch: e.epoch,
        occurred_at: Some(to_timestamp(e.occurred_at)),
        retryable: e.retryable,
    }
}

fn dead_letter_to_pb(d: &DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        task: Some(task_to_pb(&d.task)),
        errors: d.errors.iter().map(error_to_pb).collect(),
        // A dead-lettered task is not written again until it is requeued.
        dead_lettered_at: Some(to_timestamp(d.task.updated_at)),
        reason: match d.errors.last() {
            Some(e) if !e.retryable => "not retryable",
            _ => "attempts exhausted",
        }
        .to_owned(),
    }
}

fn plan_to_pb(p: &Plan) -> pb::Plan {
    pb::Plan {
        id: p.id.to_string(),
        team_id: p.team_id.to_string(),
        name: p.name.clone(),
        state: p.state.to_proto().into(),
        idempotency_key: p.idempotency_key.clone().unwrap_or_default(),
        task_count: p.task_count,
        succeeded_count: p.succeeded_count,
        failed_count: p.failed_count,
        cancelled_count: p.cancelled_count,
        created_at: Some(to_timestamp(p.created_at)),
        updated_at: Some(to_timestamp(p.updated_at)),
        finished_at: p.finished_at.map(to_timestamp),
    }
}

fn plan_tasks_to_pb(detail: &PlanDetail) -> Vec<pb::PlanTask> {
    detail
        .tasks
        .iter()
        .map(|t| pb::PlanTask {
            task: Some(task_to_pb(&t.task)),
            depends_on: t.depends_on.iter().map(ToString::to_string).collect(),
        })
        .collect()
}

fn submitted_to_pb(s: &Submitted) -> pb::SubmitTaskResponse {
    pb::SubmitTaskResponse {
        task: Some(task_to_pb(&s.task)),
        created: s.created,
    }
}

const ALL_STATES: [TaskState; 8] = [
    TaskState::Blocked,
    TaskState::Queued,
    TaskState::Leased,
    TaskState::Running,
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::Cancelled,
    TaskState::DeadLettered,
];

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(result: Result<T, Error>) -> Reply<T> {
    result.map(Response::new).map_err(Into::into)
}

#[tonic::async_trait]
impl SchedulerService for SchedulerGrpc {
    async fn submit_task(
        &self,
        request: Request<pb::SubmitTaskRequest>,
    ) -> Reply<pb::SubmitTaskResponse> {
        let req = request.into_inner();
        reply(
            async {
                let team = team(&req.team_id)?;
                let task = new_task("task", req.task.as_ref())?;
                Ok(submitted_to_pb(&self.submissions.call((team, task)).await?))
            }
            .await,
        )
    }

    async fn submit_tasks(
        &self,
        request: Request<pb::SubmitTasksRequest>,
    ) -> Reply<pb::SubmitTasksResponse> {
        let req = request.into_inner();
        reply(
            async {
                let team = team(&req.team_id)?;
                let tasks = req
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| new_task(&format!("tasks[{i}]"), Some(t)))
                    .collect::<Result<Vec<_>, _>>()?;
                let results = self.queue.submit_many(team, tasks).await?;
                Ok(pb::SubmitTasksResponse {
                    results: results.iter().map(submitted_to_pb).collect(),
                })
            }
            .await,
        )
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Reply<pb::GetTaskResponse> {
        let req = request.into_inner();
        reply(
            async {
                let task = self
                    .queue
                    .get(team(&req.team_id)?, task_id(&req.task_id)?)
                    .await?;
                Ok(pb::GetTaskResponse {
                    task: Some(task_to_pb(&task)),
                })
            }
            .await,
        )
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Reply<pb::ListTasksResponse> {
        let req = request.into_inner();
        reply(
            async {
                let team = team(&req.team_id)?;
                let (after, limit) = page_args(req.page.as_ref())?;
                let state = match pb::TaskState::try_from(req.state) {
                    Ok(pb::TaskState::Unspecified) => None,
                    wanted => Some(
                        ALL_STATES
                            .into_iter()
                            .find(|s| Ok(s.to_proto()) == wanted)
                            .ok_or_else(|| {
                                Error::invalid_argument(
                                    "state",
                                    format!("unknown task state {}", req.state),
                                )
                            })?,
                    ),
                };
                let page = self
                    .queue
                    .list(
                        team,
                        crate::queue::ListTasks {
                            state,
                            after,
                            limit,
                            plan_id: parse_optional_id("plan_id", &req.plan_id)?,
                            task_type: (!req.task_type.is_empty()).then_some(req.task_type),
                        },
                    )
                    .await?;
                Ok(pb::ListTasksResponse {
                    tasks: page.items.iter().map(task_to_pb).collect(),
                    page: Some(page_response(&page)),
                })
            }
            .await,
        )
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Reply<pb::CancelTaskResponse> {
        let req = request.into_inner();
        reply(
            async {
                let task = self
                    .queue
                    .cancel(team(&req.team_id)?, task_id(&req.task_id)?, &req.reason)
                    .await?;
                Ok(pb::CancelTaskResponse {
                    task: Some(task_to_pb(&task)),
                })
            }
            .await,
        )
    }

    async fn submit_plan(
        &self,
        request: Request<pb::SubmitPlanRequest>,
    ) -> Reply<pb::SubmitPlanResponse> {
        let req = request.into_inner();
        reply(
            async {
                let team = team(&req.team_id)?;
                let tasks = req
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        Ok(PlanTask {
                            key: t.key.clone(),
                            task: new_task(&format!("tasks[{i}].task"), t.task.as_ref())?,
                            depends_on: t.depends_on.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                let plan = NewPlan {
                    name: req.name,
                    idempotency_key: (!req.idempotency_key.is_empty())
                        .then_some(req.idempotency_key),
                    tasks,
                };
                let (detail, created) = self.queue.submit_plan(team, plan).await?;
                Ok(pb::SubmitPlanResponse {
                    plan: Some(plan_to_pb(&detail.plan)),
                    tasks: plan_tasks_to_pb(&detail),
                    created,
                })
            }
            .await,
        )
    }

    async fn get_plan(&self, request: Request<pb::GetPlanRequest>) -> Reply<pb::GetPlanResponse> {
        let req = request.into_inner();
        reply(
            async {
                let plan: PlanId = parse_id("plan_id", &req.plan_id)?;
                let detail = self.queue.get_plan(team(&req.team_id)?, plan).await?;
                Ok(pb::GetPlanResponse {
                    plan: Some(plan_to_pb(&detail.plan)),
                    tasks: plan_tasks_to_pb(&detail),
                })
            }
            .await,
        )
    }

    async fn cancel_plan(
        &self,
        request: Request<pb::CancelPlanRequest>,
    ) -> Reply<pb::CancelPlanResponse> {
        let req = request.into_inner();
        reply(
            async {
                let plan: PlanId = parse_id("plan_id", &req.plan_id)?;
                let plan = self
                    .queue
                    .cancel_plan(team(&req.team_id)?, plan, &req.reason)
                    .await?;
                Ok(pb::CancelPlanResponse {
                    plan: Some(plan_to_pb(&plan)),
                })
            }
            .await,
        )
    }

    async fn lease_tasks(
        &self,
        request: Request<pb::LeaseTasksRequest>,
    ) -> Reply<pb::LeaseTasksResponse> {
        let req = request.into_inner();
        reply(
            async {
                let id = orchestrator(&req.orchestrator_id)?;
                let instance = self.registry.get(id).await.map_err(|e| match e.code {
                    godel_error::ErrorCode::NotFound => Error::failed_precondition(format!(
                        "orchestrator {id} is not registered; register it first"
                    )),
                    _ => e,
                })?;
                if instance.draining {
                    return Ok(pb::LeaseTasksResponse { tasks: Vec::new() });
                }
                let max = usize::try_from(req.max_tasks).unwrap_or(usize::MAX);
                let leased = self
                    .queue
                    .lease(id, max, self.queue.config().default_lease_duration)
                    .await?;
                Ok(pb::LeaseTasksResponse {
                    tasks: leased.iter().map(|l| task_to_pb(&l.task)).collect(),
                })
            }
            .await,
        )
    }

    async fn heartbeat_lease(
        &self,
        request: Request<pb::HeartbeatLeaseRequest>,
    ) -> Reply<pb::HeartbeatLeaseResponse> {
        let req = request.into_inner();
        reply(
            async {
                let id = task_id(&req.task_id)?;
                self.check_owner(id, orchestrator(&req.orchestrator_id)?)
                    .await?;
                let expires = self
                    .queue
                    .heartbeat(id, req.epoch, self.queue.config().default_lease_duration)
                    .await?;
                Ok(pb::HeartbeatLeaseResponse {
                    lease_expires_at: Some(to_timestamp(expires)),
                })
            }
            .await,
        )
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Reply<pb::CompleteTaskResponse> {
        let req = request.into_inner();
        reply(
            async {
                let id = task_id(&req.task_id)?;
                let result = if req.result_json.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::from_str(&req.result_json).map_err(|e| {
                        Error::invalid_argument(
                            "result_json",
                            format!("result_json is not JSON: {e}"),
                        )
                    })?
                };
                let task = self
                    .completions
                    .call(Completion {
                        task_id: id,
                        epoch: req.epoch,
                        result,
                        owner: Some(orchestrator(&req.orchestrator_id)?),
                    })
                    .await?;
                Ok(pb::CompleteTaskResponse {
                    task: Some(task_to_pb(&task)),
                })
            }
            .await,
        )
    }

    async fn fail_task(
        &self,
        request: Request<pb::FailTaskRequest>,
    ) -> Reply<pb::FailTaskResponse> {
        let req = request.into_inner();
        reply(
            async {
                let id = task_id(&req.task_id)?;
                self.check_owner(id, orchestrator(&req.orchestrator_id)?)
                    .await?;
                let retry_after = req
                    .retry_after
                    .as_ref()
                    .map(|d| from_duration("retry_after", d))
                    .transpose()?;
                let failure = Failure {
                    code: &req.code,
                    message: &req.error,
                    retryable: req.retryable,
                    retry_after,
                };
                self.queue.fail_with(id, req.epoch, failure).await?;
                Ok(pb::FailTaskResponse {
                    task: Some(task_to_pb(&self.queue.get_any(id).await?)),
                })
            }
            .await,
        )
    }

    async fn register_orchestrator(
        &self,
        request: Request<pb::RegisterOrchestratorRequest>,
    ) -> Reply<pb::RegisterOrchestratorResponse> {
        let req = request.into_inner();
        reply(
            async {
                let registration = Registration {
                    id: orchestrator(&req.orchestrator_id)?,
                    capacity: req.capacity,
                    runtimes: req.runtimes,
                    labels: req.labels.into_iter().collect::<BTreeMap<_, _>>(),
                    endpoint: req.endpoint,
                    version: req.version,
                };
                self.registry.register(registration).await?;
                Ok(pb::RegisterOrchestratorResponse {
                    // Three heartbeats fit in the TTL, so one lost one does not matter.
                    heartbeat_interval: Some(to_duration(self.registry.ttl() / 3)),
                    lease_duration: Some(to_duration(self.queue.config().default_lease_duration)),
                })
            }
            .await,
        )
    }

    async fn heartbeat_orchestrator(
        &self,
        request: Request<pb::HeartbeatOrchestratorRequest>,
    ) -> Reply<pb::HeartbeatOrchestratorResponse> {
        let req = request.into_inner();
        reply(
            async {
                let registered = self
                    .registry
                    .heartbeat(
                        orchestrator(&req.orchestrator_id)?,
                        req.capacity,
                        req.active_sessions,
                        req.draining,
                    )
                    .await?;
                Ok(pb::HeartbeatOrchestratorResponse { registered })
            }
            .await,
        )
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Reply<pb::ListDeadLettersResponse> {
        let req = request.into_inner();
        reply(
            async {
                let team = team(&req.team_id)?;
                let (after, limit) = page_args(req.page.as_ref())?;
                let task_type = (!req.task_type.is_empty()).then_some(req.task_type);
                let page = self
                    .queue
                    .dead_letters(team, after, limit, task_type)
                    .await?;
                Ok(pb::ListDeadLettersResponse {
                    dead_letters: page.items.iter().map(dead_letter_to_pb).collect(),
                    page: Some(page_response(&page)),
                })
            }
            .await,
        )
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Reply<pb::GetDeadLetterResponse> {
        let req = request.into_inner();
        reply(
            async {
                let dead = self
                    .queue
                    .dead_letter(team(&req.team_id)?, task_id(&req.task_id)?)
                    .await?;
                Ok(pb::GetDeadLetterResponse {
                    dead_letter: Some(dead_letter_to_pb(&dead)),
                })
            }
            .await,
        )
    }

    async fn requeue_dead_letter(
        &self,
        request: Request<pb::RequeueDeadLetterRequest>,
    ) -> Reply<pb::RequeueDeadLetterResponse> {
        let req = request.into_inner();
        reply(
            async {
                let task = self
                    .queue
                    .requeue_dead_letter(team(&req.team_id)?, task_id(&req.task_id)?)
                    .await?;
                Ok(pb::RequeueDeadLetterResponse {
                    task: Some(task_to_pb(&task)),
                })
            }
            .await,
        )
    }

    async fn purge_dead_letters(
        &self,
        request: Request<pb::PurgeDeadLettersRequest>,
    ) -> Reply<pb::PurgeDeadLettersResponse> {
        let req = request.into_inner();
        reply(
            async {
                let team = team(&req.team_id)?;
                let ids: Vec<TaskId> = parse_ids("task_ids", &req.task_ids)?;
                let before = req
                    .dead_lettered_before
                    .as_ref()
                    .map(|t| from_timestamp("dead_lettered_before", t))
                    .transpose()?;
                let purged = self
                    .queue
                    .purge_dead_letters_before(team, &ids, before)
                    .await?;
                Ok(pb::PurgeDeadLettersResponse { purged })
            }
            .await,
        )
    }

    async fn get_queue_stats(
        &self,
        request: Request<pb::GetQueueStatsRequest>,
    ) -> Reply<pb::GetQueueStatsResponse> {
        let req = request.into_inner();
        reply(
            async {
                let only: Option<TeamId> = parse_optional_id("team_id", &req.team_id)?;
                let stats = self.queue.stats().await?;
                let counts = COUNTED_STATES
                    .iter()
                    .map(|state| pb::StateCount {
                        state: state.to_proto().into(),
                        count: stats
                            .depth
                            .iter()
                            .filter(|((t, s), _)| s == state && only.is_none_or(|o| o == *t))
                            .map(|(_, n)| *n)
                            .sum(),
                    })
                    .collect();
                let oldest = stats
                    .oldest_queued
                    .iter()
                    .filter(|(t, _)| only.is_none_or(|o| o == **t))
                    .map(|(_, age)| *age)
                    .max();
                let live: Vec<_> = self
                    .registry
                    .list()
                    .await?
                    .into_iter()
                    .filter(|o| o.healthy)
                    .collect();
                Ok(pb::GetQueueStatsResponse {
                    counts,
                    oldest_queued_age: oldest.map(to_duration),
                    orchestrators: u32::try_from(live.len()).unwrap_or(u32::MAX),
                    total_capacity: live.iter().map(|o| u64::from(o.capacity)).sum(),
                    free_capacity: live.iter().map(|o| o.free()).sum(),
                })
            }
            .await,
        )
    }

    async fn put_profile(
        &self,
        request: Request<pb::PutProfileRequest>,
    ) -> Result<Response<pb::PutProfileResponse>, Status> {
        Ok(Response::new(
            profiles::put(&self.profiles, request.into_inner()).await?,
        ))
    }

    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        Ok(Response::new(
            profiles::list(&self.profiles, request.into_inner()).await?,
        ))
    }

    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Reply<pb::ListPlansResponse> {
        reply(intents::list(&self.queue, request.into_inner()).await)
    }

    async fn plan_intent(
        &self,
        request: Request<pb::PlanIntentRequest>,
    ) -> Reply<pb::PlanIntentResponse> {
        // Forwarded by the gateway: the LLM planner may ask as this caller.
        let caller_token = godel_identity::bearer_token(request.metadata())
            .ok()
            .flatten()
            .map(str::to_owned);
        reply(
            intents::plan(
                &self.planning,
                &self.profiles,
                request.into_inner(),
                caller_token.as_deref(),
            )
            .await,
        )
    }

    async fn submit_intent_plan(
        &self,
        request: Request<pb::SubmitIntentPlanRequest>,
    ) -> Reply<pb::SubmitPlanResponse> {
        let req = request.into_inner();
        reply(intents::submit(&self.planning, &self.profiles, &self.queue, req).await)
    }

    async fn delete_profile(
        &self,
        request: Request<pb::DeleteProfileRequest>,
    ) -> Result<Response<pb::DeleteProfileResponse>, Status> {
        Ok(Response::new(
            profiles::delete(&self.profiles, request.into_inner()).await?,
        ))
    }
}
