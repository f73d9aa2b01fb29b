//! `godel profile …`: the team's agent profiles (which agent, model and task types;
//! the planner prefers a lower `preference`).
//!
//! Exit codes: 0 done, 2 an error (printed with its fix).

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{Output, ProfileArgs, ProfileCommand};
use crate::rest::Api;
use crate::work::render::text;
use crate::work::{emit, print_json, run};

/// `godel profile …`.
pub fn run_profile(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        let api = Api::connect(&args.api).await?;
        let text_out = args.api.output == Output::Text;
        let answer = match args.command {
            ProfileCommand::List => {
                let listed = api.get(&api.team_path("/profiles")).await?;
                if text_out {
                    for p in listed["profiles"].as_array().into_iter().flatten() {
                        emit(&format!("{}\n", line(p)))?;
                    }
                }
                listed
            }
            ProfileCommand::Put {
                name,
                adapter,
                model,
                task_types,
                preference,
                estimated_cost_micro_usd,
            } => {
                let put = api
                    .put(
                        &api.team_path(&format!("/profiles/{name}")),
                        &json!({
                            "adapter": adapter,
                            "model": model.unwrap_or_default(),
                            "taskTypes": task_types,
                            "preference": preference.unwrap_or_default(),
                            "estimatedCostMicroUsd": estimated_cost_micro_usd.unwrap_or_default(),
                        }),
                    )
                    .await?;
                if text_out {
                    emit(&format!("Stored profile: {}\n", line(&put["profile"])))?;
                }
                put
            }
            ProfileCommand::Delete { name } => {
                let deleted = api
                    .delete(&api.team_path(&format!("/profiles/{name}")))
                    .await?;
                if text_out {
                    emit(&format!("Deleted profile {name}.\n"))?;
                }
                deleted
            }
        };
        if !text_out {
            print_json(&answer)?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn line(p: &Value) -> String {
    let types: Vec<&str> = p["taskTypes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{:<16} {:<12} {:<20} preference {:<4} {}{}",
        text(&p["name"]),
        text(&p["adapter"]),
        text(&p["model"]),
        p["preference"].as_i64().unwrap_or(0),
        if types.is_empty() {
            "any task type".to_owned()
        } else {
            types.join(", ")
        },
        if p["builtin"].as_bool() == Some(true) {
            "  (built-in)"
        } else {
            ""
        }
    )
}
