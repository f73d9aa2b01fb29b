//! Intents (scheduler): what an engineer wants, in words, planned into a DAG of
//! tasks — shown (dry run) or planned and submitted in one call.

use axum::Json;
use axum::extract::Path;
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::scheduler::v1::{
    IntentGate, IntentPlan, IntentRepository, Plan, PlanIntentRequest, PlanTask,
    SubmitIntentPlanRequest,
};
use godel_types::TeamId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

/// The repository an intent's tasks work in (`godel.scheduler.v1.IntentRepository`).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct Repository {
    /// A path on the orchestrators' machine or a git URL.
    url: String,
    /// The branch or ref the work starts from; absent: the default branch.
    #[serde(default, rename = "ref")]
    git_ref: String,
    /// The commit the work is based on (40 hex digits); required to submit.
    #[serde(default)]
    commit: String,
}

impl Repository {
    pub(crate) fn to_pb(&self) -> IntentRepository {
        IntentRepository {
            url: self.url.clone(),
            r#ref: self.git_ref.clone(),
            commit: self.commit.clone(),
        }
    }
}

/// The quality gate run after code-changing tasks (`godel.scheduler.v1.IntentGate`).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct Gate {
    /// The shell command; it passes when it exits 0.
    command: String,
    /// How long it may run (`10m`); absent: 10 minutes.
    #[serde(default)]
    timeout: String,
}

impl Gate {
    pub(crate) fn to_pb(&self) -> IntentGate {
        IntentGate {
            command: self.command.clone(),
            timeout: self.timeout.clone(),
        }
    }
}

/// An intent to plan, and to submit unless `dry_run`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewIntent {
    /// What the engineer wants, in words.
    text: String,
    /// Where the tasks work; required unless `dry_run`.
    #[serde(default)]
    repository: Option<Repository>,
    /// The quality gate; absent: the repository's own (`godel.toml`), if any.
    #[serde(default)]
    gate: Option<Gate>,
    /// `auto` (default), `deterministic` or `llm`.
    #[serde(default)]
    planner: String,
    /// Plan only: return the plan without submitting it.
    #[serde(default)]
    dry_run: bool,
    /// Deduplicates submissions within the team.
    #[serde(default)]
    idempotency_key: String,
}

/// The planned intent and, when it was submitted, the plan and its tasks.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IntentResponse {
    /// The plan as planned (`godel.scheduler.v1.IntentPlan`).
    intent: IntentPlan,
    /// The submitted plan (`godel.scheduler.v1.Plan`); absent for a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<Plan>,
    /// The submitted tasks with their dependencies (`godel.scheduler.v1.PlanTask`).
    tasks: Vec<PlanTask>,
    /// False when the idempotency key matched an existing plan.
    created: bool,
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/intents",
    tag = "plans",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    request_body = NewIntent,
    responses(
        (status = 200, description = "Dry run: `{\"intent\": godel.scheduler.v1.IntentPlan}` — the plan (task types, profiles, dependencies, estimated cost, the planner and why it fell back), nothing submitted", body = ProtoJson),
        (status = 201, description = "Planned and submitted: `{\"intent\", \"plan\": godel.scheduler.v1.Plan, \"tasks\": [godel.scheduler.v1.PlanTask], \"created\"}`", body = ProtoJson),
        (status = 400, description = "Invalid input, or no valid plan (every problem listed)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn submit_intent(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Body(intent): Body<NewIntent>,
) -> Result<(http::StatusCode, Json<IntentResponse>), Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::PlansCreate)?;
    if intent.text.trim().is_empty() {
        return Err(Error::invalid_argument(
            "text",
            "say what you want done, in words",
        ));
    }
    if !intent.dry_run && intent.repository.is_none() {
        return Err(Error::invalid_argument(
            "repository",
            "name the repository (url, ref, commit) or ask for a dry_run",
        ));
    }
    let mut scheduler = ctx.state.clients.scheduler.clone();
    let request = ctx.request(PlanIntentRequest {
        team_id: team.to_string(),
        text: intent.text.clone(),
        planner: intent.planner.clone(),
    })?;
    let planned = scheduler
        .plan_intent(request)
        .await
        .map_err(upstream)?
        .into_inner()
        .plan
        .ok_or_else(|| Error::internal("the scheduler returned no plan"))?;
    let Some(repository) = intent.repository.as_ref().filter(|_| !intent.dry_run) else {
        return Ok((
            http::StatusCode::OK,
            Json(IntentResponse {
                intent: planned,
                plan: None,
                tasks: Vec::new(),
                created: false,
            }),
        ));
    };
    let request = ctx.request(SubmitIntentPlanRequest {
        team_id: team.to_string(),
        text: intent.text,
        repository: Some(repository.to_pb()),
        gate: intent.gate.as_ref().map(Gate::to_pb),
        plan: Some(planned.clone()),
        idempotency_key: intent.idempotency_key,
    })?;
    let submitted = scheduler
        .submit_intent_plan(request)
        .await
        .map_err(upstream)?
        .into_inner();
    let status = if submitted.created {
        http::StatusCode::CREATED
    } else {
        http::StatusCode::OK
    };
    Ok((
        status,
        Json(IntentResponse {
            intent: planned,
            plan: submitted.plan,
            tasks: submitted.tasks,
            created: submitted.created,
        }),
    ))
}
