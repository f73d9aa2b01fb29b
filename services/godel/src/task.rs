//! `godel task …` and `godel watch <tsk_…>`: submitting, listing, showing and
//! cancelling tasks, the dead-letter queue, and following a task's state changes
//! (`GET …/tasks/{id}/events`) to its end.
//!
//! Exit codes: 0 done (`watch`: the task succeeded), 1 the task failed, was
//! dead-lettered or cancelled (`watch`), 2 an error (printed with its fix).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cli::{DlqCommand, Output, TaskArgs, TaskCommand};
use crate::rest::{Api, query};
use crate::sse::{self, Next};
use crate::work::render::{number, state_name, text};
use crate::work::{EXIT_PLAN_FAILED, emit, print_json, run};

/// `godel task …`.
pub fn run_task(args: TaskArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        let api = Api::connect(&args.api).await?;
        let output = args.api.output;
        let answer = match args.command {
            TaskCommand::Submit {
                task_type,
                payload,
                priority,
                idempotency_key,
            } => {
                let payload = match payload {
                    Some(raw) => parse_payload(&raw)?,
                    None => json!({}),
                };
                let submitted = api
                    .post(
                        &api.team_path("/tasks"),
                        &json!({
                            "task_type": task_type,
                            "payload": payload,
                            "priority": priority,
                            "idempotency_key": idempotency_key,
                        }),
                    )
                    .await?;
                if output == Output::Text {
                    let id = text(&submitted["task"]["id"]);
                    let what = if submitted["created"].as_bool() == Some(true) {
                        "Submitted"
                    } else {
                        "Already submitted (same idempotency key):"
                    };
                    emit(&format!(
                        "{what} task {id} ({}).\nFollow it: godel watch {id}\n",
                        state_name(&submitted["task"]["state"], "TASK_STATE_")
                    ))?;
                }
                submitted
            }
            TaskCommand::List { state, plan, limit } => {
                let query = query(&[
                    ("page_size", Some(limit.to_string())),
                    ("state", state),
                    ("plan_id", plan),
                ]);
                let listed = api.get(&api.team_path(&format!("/tasks{query}"))).await?;
                if output == Output::Text {
                    let tasks = listed["tasks"].as_array().cloned().unwrap_or_default();
                    if tasks.is_empty() {
                        emit("No tasks. Submit one: godel task submit --type <type>\n")?;
                    }
                    for task in &tasks {
                        emit(&format!("{}\n", task_line(task)))?;
                    }
                }
                listed
            }
            TaskCommand::Show { task_id } => {
                let shown = api
                    .get(&api.team_path(&format!("/tasks/{task_id}")))
                    .await?;
                if output == Output::Text {
                    emit(&task_details(&shown["task"]))?;
                }
                shown
            }
            TaskCommand::Cancel { task_id, reason } => {
                let cancelled = api
                    .post(
                        &api.team_path(&format!("/tasks/{task_id}/cancel")),
                        &json!({"reason": reason}),
                    )
                    .await?;
                if output == Output::Text {
                    emit(&format!(
                        "Task {task_id} is {}.\n",
                        state_name(&cancelled["task"]["state"], "TASK_STATE_")
                    ))?;
                }
                cancelled
            }
            TaskCommand::Dlq(command) => dlq(&api, output, command).await?,
        };
        if output == Output::Json {
            print_json(&answer)?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn dlq(api: &Api, output: Output, command: DlqCommand) -> anyhow::Result<Value> {
    let text_out = output == Output::Text;
    Ok(match command {
        DlqCommand::List { limit } => {
            let listed = api
                .get(&api.team_path(&format!("/dlq?page_size={limit}")))
                .await?;
            if text_out {
                let letters = listed["deadLetters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if letters.is_empty() {
                    emit("The dead-letter queue is empty.\n")?;
                }
                for letter in &letters {
                    emit(&format!(
                        "{}  {}  {}\n",
                        task_line(&letter["task"]),
                        text(&letter["deadLetteredAt"]),
                        text(&letter["reason"])
                    ))?;
                }
            }
            listed
        }
        DlqCommand::Show { task_id } => {
            let shown = api.get(&api.team_path(&format!("/dlq/{task_id}"))).await?;
            if text_out {
                let letter = shown.get("deadLetter").unwrap_or(&shown);
                emit(&task_details(&letter["task"]))?;
                emit(&format!(
                    "dead-lettered {}: {}\n",
                    text(&letter["deadLetteredAt"]),
                    text(&letter["reason"])
                ))?;
                for error in letter["errors"].as_array().into_iter().flatten() {
                    emit(&format!("  {error}\n"))?;
                }
            }
            shown
        }
        DlqCommand::Requeue { task_id } => {
            let requeued = api
                .post(
                    &api.team_path(&format!("/dlq/{task_id}/requeue")),
                    &json!({}),
                )
                .await?;
            if text_out {
                emit(&format!(
                    "Task {task_id} is {} again.\n",
                    state_name(&requeued["task"]["state"], "TASK_STATE_")
                ))?;
            }
            requeued
        }
        DlqCommand::Purge { before, task_ids } => {
            let purged = api
                .post(
                    &api.team_path("/dlq/purge"),
                    &json!({"task_ids": task_ids, "dead_lettered_before": before}),
                )
                .await?;
            if text_out {
                emit(&format!(
                    "Purged {} dead letters.\n",
                    number(&purged["purged"])
                ))?;
            }
            purged
        }
    })
}

/// A task payload: JSON, or `@file` holding it.
fn parse_payload(raw: &str) -> anyhow::Result<Value> {
    let (source, content) = match raw.strip_prefix('@') {
        Some(path) => (
            path.to_owned(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the payload file {path}: check the path"))?,
        ),
        None => ("--payload".to_owned(), raw.to_owned()),
    };
    let value: Value = serde_json::from_str(&content).with_context(|| {
        format!("{source} is not JSON: pass a JSON object, or @file with one in the file")
    })?;
    if !value.is_object() {
        anyhow::bail!("{source} is not a JSON object: the payload must be one (`{{…}}`)");
    }
    Ok(value)
}

/// One task in a line: id, state, type, attempts, plan.
fn task_line(task: &Value) -> String {
    let plan = text(&task["planId"]);
    format!(
        "{}  {:<13} {:<12} attempt {}/{}{}",
        text(&task["id"]),
        state_name(&task["state"], "TASK_STATE_"),
        text(&task["taskType"]),
        number(&task["attempts"]),
        number(&task["maxAttempts"]),
        if plan.is_empty() {
            String::new()
        } else {
            format!("  {plan}")
        }
    )
}

fn task_details(task: &Value) -> String {
    let mut out = format!(
        "{}\n  state     {}\n  type      {}\n  priority  {}\n  attempts  {}/{}\n  created   {}\n  updated   {}\n",
        text(&task["id"]),
        state_name(&task["state"], "TASK_STATE_"),
        text(&task["taskType"]),
        number(&task["priority"]),
        number(&task["attempts"]),
        number(&task["maxAttempts"]),
        text(&task["createdAt"]),
        text(&task["updatedAt"]),
    );
    for (label, field) in [
        ("plan", "planId"),
        ("profile", "profileId"),
        ("error", "lastError"),
        ("result", "resultJson"),
    ] {
        let value = text(&task[field]);
        if !value.is_empty() {
            out.push_str(&format!("  {label:<9} {value}\n"));
        }
    }
    out
}

/// Whether a task state (`succeeded`, `failed` …) is final.
fn terminal(state: &str) -> bool {
    matches!(
        state,
        "succeeded" | "failed" | "cancelled" | "dead_lettered"
    )
}

/// `godel watch <tsk_…>`: prints the task's state and each change, until it ends.
pub async fn watch(api: &Api, task_id: &str, output: Output) -> anyhow::Result<ExitCode> {
    let path = api.team_path(&format!("/tasks/{task_id}/events"));
    let mut last = String::new();
    sse::follow(api, &path, None, |event| {
        let data = event.json();
        if output == Output::Json {
            emit(&format!("{}\n", serde_json::to_string(&data)?))?;
        }
        let state = match text(&data["kind"]).as_str() {
            "snapshot" => state_name(&data["task"]["state"], "TASK_STATE_"),
            kind => kind.strip_prefix("task.").unwrap_or(kind).to_owned(),
        };
        if output == Output::Text && !state.is_empty() && state != last {
            let time = text(&data["time"]);
            let error = text(&data["event"]["error"]);
            emit(&format!(
                "{task_id}  {state}{}{}\n",
                if time.is_empty() {
                    String::new()
                } else {
                    format!("  {time}")
                },
                if error.is_empty() {
                    String::new()
                } else {
                    format!("  {error}")
                }
            ))?;
        }
        if !state.is_empty() {
            last = state;
        }
        Ok(Next::Continue)
    })
    .await?;
    // The stream ended with the task: its state now is the outcome.
    let now = api
        .get(&api.team_path(&format!("/tasks/{task_id}")))
        .await?;
    let state = state_name(&now["task"]["state"], "TASK_STATE_");
    if !terminal(&state) {
        anyhow::bail!(
            "the task's event stream ended while it is {state}; run `godel watch {task_id}` again"
        );
    }
    if output == Output::Text && state != last {
        emit(&format!("{task_id}  {state}\n"))?;
    }
    Ok(if state == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PLAN_FAILED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_must_be_json_objects() {
        assert_eq!(parse_payload(r#"{"a":1}"#).unwrap()["a"], 1);
        let err = parse_payload("[1]").unwrap_err().to_string();
        assert!(err.contains("not a JSON object"), "{err}");
        let err = format!(
            "{:#}",
            parse_payload("@/nonexistent/payload.json").unwrap_err()
        );
        assert!(err.contains("cannot read the payload file"), "{err}");
    }
}
