//! `godel team …`: the teams the credential can act in, and one team's members,
//! roles and quotas.
//!
//! Exit codes: 0 done, 2 an error (printed with its fix).

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{MembersCommand, Output, QuotasCommand, RolesCommand, TeamArgs, TeamCommand};
use crate::rest::Api;
use crate::work::render::{number, text};
use crate::work::{emit, print_json, run};

/// `godel team …`.
pub fn run_team(args: TeamArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        let api = Api::connect(&args.api).await?;
        let text_out = args.api.output == Output::Text;
        let answer = match args.command {
            TeamCommand::List => {
                let listed = api.get("/v1/teams").await?;
                if text_out {
                    for team in listed["teams"].as_array().into_iter().flatten() {
                        let current = if text(&team["id"]) == api.team {
                            "  *"
                        } else {
                            ""
                        };
                        emit(&format!("{}{current}\n", team_line(team)))?;
                    }
                }
                listed
            }
            TeamCommand::Show { team_id } => {
                let id = team_id.unwrap_or_else(|| api.team.clone());
                let shown = api.get(&format!("/v1/teams/{id}")).await?;
                if text_out {
                    emit(&format!("{}\n", team_line(&shown["team"])))?;
                }
                shown
            }
            TeamCommand::Members { command } => match command.unwrap_or(MembersCommand::List) {
                MembersCommand::List => {
                    let listed = api.get(&api.team_path("/members")).await?;
                    if text_out {
                        for m in listed["members"].as_array().into_iter().flatten() {
                            emit(&format!(
                                "{}  {:<30} {}\n",
                                text(&m["userId"]),
                                text(&m["email"]),
                                strings(&m["roles"])
                            ))?;
                        }
                    }
                    listed
                }
                MembersCommand::Add { user_id, roles } => {
                    let added = api
                        .post(
                            &api.team_path("/members"),
                            &json!({"user_id": user_id, "roles": roles}),
                        )
                        .await?;
                    if text_out {
                        emit(&format!(
                            "{user_id} is a member with roles {}.\n",
                            roles.join(", ")
                        ))?;
                    }
                    added
                }
                MembersCommand::Remove { user_id } => {
                    let removed = api
                        .delete(&api.team_path(&format!("/members/{user_id}")))
                        .await?;
                    if text_out {
                        emit(&format!(
                            "{user_id} is no longer a member of {}.\n",
                            api.team
                        ))?;
                    }
                    removed
                }
            },
            TeamCommand::Roles { command } => match command.unwrap_or(RolesCommand::List) {
                RolesCommand::List => {
                    let listed = api.get(&api.team_path("/roles")).await?;
                    if text_out {
                        for r in listed["roles"].as_array().into_iter().flatten() {
                            let kind = if r["builtIn"].as_bool() == Some(true) {
                                "built-in"
                            } else {
                                "custom"
                            };
                            emit(&format!(
                                "{:<16} {kind:<9} {}\n",
                                text(&r["name"]),
                                strings(&r["permissions"])
                            ))?;
                        }
                    }
                    listed
                }
                RolesCommand::Create { name, permissions } => {
                    let created = api
                        .post(
                            &api.team_path("/roles"),
                            &json!({"name": name, "permissions": permissions}),
                        )
                        .await?;
                    if text_out {
                        emit(&format!(
                            "Created role {name}: {}.\n",
                            permissions.join(", ")
                        ))?;
                    }
                    created
                }
            },
            TeamCommand::Quotas { command } => match command.unwrap_or(QuotasCommand::Show) {
                QuotasCommand::Show => {
                    let shown = api.get(&api.team_path("/quotas")).await?;
                    if text_out {
                        emit(&quotas(&shown))?;
                    }
                    shown
                }
                QuotasCommand::Set {
                    max_concurrent_sessions,
                    max_queued_tasks,
                    rate_limit_per_minute,
                    monthly_budget_micro_usd,
                } => {
                    let set = api
                        .put(
                            &api.team_path("/quotas"),
                            &json!({
                                "max_concurrent_sessions": max_concurrent_sessions,
                                "max_queued_tasks": max_queued_tasks,
                                "rate_limit_per_minute": rate_limit_per_minute,
                                "monthly_budget_micro_usd": monthly_budget_micro_usd,
                            }),
                        )
                        .await?;
                    if text_out {
                        emit(&quotas(&set))?;
                    }
                    set
                }
            },
        };
        if !text_out {
            print_json(&answer)?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn team_line(team: &Value) -> String {
    format!(
        "{}  {:<20} {}",
        text(&team["id"]),
        text(&team["name"]),
        text(&team["displayName"])
    )
}

fn strings(value: &Value) -> String {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A quotas answer (`{quotas: {…}}`), each limit or `default`.
fn quotas(answer: &Value) -> String {
    let q = answer.get("quotas").unwrap_or(answer);
    let limit = |field: &str| {
        if q[field].is_null() {
            "default".to_owned()
        } else {
            number(&q[field]).to_string()
        }
    };
    format!(
        "max concurrent sessions  {}\nmax queued tasks         {}\nrate limit per minute    {}\nmonthly budget (µUSD)    {}\n",
        limit("maxConcurrentSessions"),
        limit("maxQueuedTasks"),
        limit("rateLimitPerMinute"),
        limit("monthlyBudgetMicroUsd"),
    )
}
