//! Tasks (scheduler): submit, list, get, cancel — in one team.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query};
use godel_error::Error;
use godel_identity::Permission;
use godel_proto::scheduler::v1::{
    CancelTaskRequest, CancelTaskResponse, GetTaskRequest, GetTaskResponse, ListTasksRequest,
    ListTasksResponse, SubmitTaskRequest, SubmitTaskResponse, TaskSpec, TaskState,
};
use godel_types::{TaskId, TeamId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::PageQuery;
use crate::call::{Body, Ctx, parse_path_id, upstream};
use crate::openapi::{ProblemDoc, ProtoJson};

/// A task to submit (`godel.scheduler.v1.TaskSpec`).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewTask {
    /// The kind of work, for example `code.fix`.
    task_type: String,
    /// 1 (lowest) to 100 (highest); absent means 50.
    #[serde(default)]
    priority: Option<u32>,
    /// The task's input: a JSON object.
    #[serde(default)]
    #[schema(value_type = Object)]
    payload: Option<serde_json::Value>,
    /// Deduplicates submissions within the team.
    #[serde(default)]
    idempotency_key: Option<String>,
    /// Attempts before the task is dead-lettered; absent means the default.
    #[serde(default)]
    max_attempts: Option<u32>,
    /// Agent profile (`prf_…`).
    #[serde(default)]
    profile_id: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    labels: HashMap<String, String>,
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/tasks",
    tag = "tasks",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`")),
    request_body = NewTask,
    responses(
        (status = 201, description = "The task (`godel.scheduler.v1.SubmitTaskResponse`; `created` is false for an idempotent repeat)", body = ProtoJson),
        (status = 400, description = "Invalid input", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn submit_task(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Body(task): Body<NewTask>,
) -> Result<(http::StatusCode, Json<SubmitTaskResponse>), Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TasksCreate)?;
    let payload = task.payload.unwrap_or_else(|| serde_json::json!({}));
    if !payload.is_object() {
        return Err(Error::invalid_argument("payload", "must be a JSON object"));
    }
    let request = ctx.request(SubmitTaskRequest {
        team_id: team.to_string(),
        task: Some(TaskSpec {
            task_type: task.task_type,
            priority: task.priority.unwrap_or(0),
            payload_json: payload.to_string(),
            idempotency_key: task.idempotency_key.unwrap_or_default(),
            max_attempts: task.max_attempts.unwrap_or(0),
            not_before: None,
            profile_id: task.profile_id.unwrap_or_default(),
            labels: task.labels,
        }),
    })?;
    let response = ctx
        .state
        .clients
        .scheduler
        .clone()
        .submit_task(request)
        .await;
    let response = response.map_err(upstream)?.into_inner();
    let status = if response.created {
        http::StatusCode::CREATED
    } else {
        http::StatusCode::OK
    };
    Ok((status, Json(response)))
}

/// Filters of a task listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TaskFilter {
    /// Only tasks in this state (`queued`, `running`, `succeeded` …).
    #[serde(default)]
    state: Option<String>,
    /// Only tasks of this plan (`pln_…`).
    #[serde(default)]
    plan_id: Option<String>,
    /// Only tasks of this type.
    #[serde(default)]
    task_type: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/tasks",
    tag = "tasks",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), PageQuery, TaskFilter),
    responses(
        (status = 200, description = "Tasks, oldest first (`godel.scheduler.v1.ListTasksResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_tasks(
    ctx: Ctx,
    Path(team_id): Path<String>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<TaskFilter>,
) -> Result<Json<ListTasksResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TasksRead)?;
    let state = match filter.state.as_deref() {
        None | Some("") => TaskState::Unspecified,
        Some(name) => {
            TaskState::from_str_name(&format!("TASK_STATE_{}", name.to_ascii_uppercase()))
                .ok_or_else(|| {
                    Error::invalid_argument("state", format!("unknown task state `{name}`"))
                })?
        }
    };
    let request = ctx.request(ListTasksRequest {
        team_id: team.to_string(),
        page: Some(page.to_pb()),
        state: state as i32,
        plan_id: filter.plan_id.unwrap_or_default(),
        task_type: filter.task_type.unwrap_or_default(),
    })?;
    let response = ctx
        .state
        .clients
        .scheduler
        .clone()
        .list_tasks(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

#[utoipa::path(
    get,
    path = "/v1/teams/{team_id}/tasks/{task_id}",
    tag = "tasks",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("task_id" = String, Path, description = "`tsk_…`")),
    responses(
        (status = 200, description = "The task (`godel.scheduler.v1.GetTaskResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_task(
    ctx: Ctx,
    Path((team_id, task_id)): Path<(String, String)>,
) -> Result<Json<GetTaskResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TasksRead)?;
    let task: TaskId = parse_path_id("task", &task_id)?;
    let request = ctx.request(GetTaskRequest {
        team_id: team.to_string(),
        task_id: task.to_string(),
    })?;
    let response = ctx.state.clients.scheduler.clone().get_task(request).await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}

/// Why a task is cancelled.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct CancelTask {
    /// For the record.
    #[serde(default)]
    reason: String,
}

#[utoipa::path(
    post,
    path = "/v1/teams/{team_id}/tasks/{task_id}/cancel",
    tag = "tasks",
    security(("bearer" = [])),
    params(("team_id" = String, Path, description = "`team_…`"), ("task_id" = String, Path, description = "`tsk_…`")),
    request_body = CancelTask,
    responses(
        (status = 200, description = "The cancelled task (`godel.scheduler.v1.CancelTaskResponse`)", body = ProtoJson),
        (status = 403, description = "The caller lacks the permission in this team", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource in this team", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cancel_task(
    ctx: Ctx,
    Path((team_id, task_id)): Path<(String, String)>,
    Body(cancel): Body<CancelTask>,
) -> Result<Json<CancelTaskResponse>, Error> {
    let team: TeamId = parse_path_id("team", &team_id)?;
    ctx.require(team, Permission::TasksCancel)?;
    let task: TaskId = parse_path_id("task", &task_id)?;
    let request = ctx.request(CancelTaskRequest {
        team_id: team.to_string(),
        task_id: task.to_string(),
        reason: cancel.reason,
    })?;
    let response = ctx
        .state
        .clients
        .scheduler
        .clone()
        .cancel_task(request)
        .await;
    Ok(Json(response.map_err(upstream)?.into_inner()))
}
