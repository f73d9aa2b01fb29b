//! `godel session …` and `godel watch <ses_…>`: listing, showing and stopping
//! agent sessions, and their logs (`GET …/sessions/{id}/events`) as readable lines.
//!
//! Exit codes: 0 done (`watch`: the session succeeded), 1 the session did not
//! succeed (`watch`), 2 an error (printed with its fix).

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{Output, SessionArgs, SessionCommand};
use crate::rest::{Api, query};
use crate::sse::{self, Next};
use crate::work::render::{Style, number, state_name, text, usd};
use crate::work::{EXIT_PLAN_FAILED, emit, print_json, run, style};

/// `godel session …`.
pub fn run_session(args: SessionArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        let api = Api::connect(&args.api).await?;
        let output = args.api.output;
        let style = style(&args.api);
        let answer = match args.command {
            SessionCommand::List { state, task, limit } => {
                let query = query(&[("page_size", Some(limit.to_string())), ("task_id", task)]);
                let mut listed = api
                    .get(&api.team_path(&format!("/sessions{query}")))
                    .await?;
                if let Some(state) = state {
                    // The route filters by task only: the state is filtered here.
                    let wanted = state.to_ascii_lowercase();
                    if let Some(sessions) = listed["sessions"].as_array_mut() {
                        sessions.retain(|s| state_name(&s["state"], "SESSION_STATE_") == wanted);
                    }
                }
                if output == Output::Text {
                    let sessions = listed["sessions"].as_array().cloned().unwrap_or_default();
                    if sessions.is_empty() {
                        emit("No sessions.\n")?;
                    }
                    for s in &sessions {
                        emit(&format!(
                            "{}  {:<10} {}  {:<12} {}  {}\n",
                            text(&s["id"]),
                            state_name(&s["state"], "SESSION_STATE_"),
                            text(&s["taskId"]),
                            text(&s["adapter"]),
                            usd(number(&s["usage"]["costMicroUsd"])),
                            style.dim(&text(&s["createdAt"])),
                        ))?;
                    }
                }
                listed
            }
            SessionCommand::Show { session_id } => {
                let shown = api
                    .get(&api.team_path(&format!("/sessions/{session_id}")))
                    .await?;
                if output == Output::Text {
                    emit(&details(&shown["session"]))?;
                }
                shown
            }
            SessionCommand::Logs {
                session_id,
                follow,
                from,
            } => {
                logs(&api, &session_id, follow, from, output, style).await?;
                return Ok(ExitCode::SUCCESS);
            }
            SessionCommand::Stop {
                session_id,
                force,
                reason,
            } => {
                let stopped = api
                    .post(
                        &api.team_path(&format!("/sessions/{session_id}/stop")),
                        &json!({"reason": reason, "force": force}),
                    )
                    .await?;
                if output == Output::Text {
                    emit(&format!(
                        "Session {session_id} is {}.\n",
                        state_name(&stopped["session"]["state"], "SESSION_STATE_")
                    ))?;
                }
                stopped
            }
        };
        if output == Output::Json {
            print_json(&answer)?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn details(s: &Value) -> String {
    let usage = &s["usage"];
    let mut out = format!(
        "{}\n  state        {}\n  task         {}\n  agent        {} ({})\n  runtime      {}\n  created      {}\n  usage        {} in, {} out tokens, {}\n  events       {}\n",
        text(&s["id"]),
        state_name(&s["state"], "SESSION_STATE_"),
        text(&s["taskId"]),
        text(&s["adapter"]),
        text(&s["profileId"]),
        text(&s["runtime"]),
        text(&s["createdAt"]),
        number(&usage["inputTokens"]),
        number(&usage["outputTokens"]),
        usd(number(&usage["costMicroUsd"])),
        number(&s["lastEventOffset"]),
    );
    for (label, field) in [
        ("branch", "branch"),
        ("confinement", "confinement"),
        ("finished", "finishedAt"),
        ("error", "error"),
    ] {
        let value = text(&s[field]);
        if !value.is_empty() {
            out.push_str(&format!("  {label:<12} {value}\n"));
        }
    }
    out
}

/// Prints the session's events from offset `from`: those recorded so far, or with
/// `follow` every one until the session ends.
async fn logs(
    api: &Api,
    session_id: &str,
    follow: bool,
    from: u64,
    output: Output,
    style: Style,
) -> anyhow::Result<()> {
    let last = if follow {
        None
    } else {
        let shown = api
            .get(&api.team_path(&format!("/sessions/{session_id}")))
            .await?;
        let last = number(&shown["session"]["lastEventOffset"]);
        if last < from.max(1) {
            return Ok(());
        }
        Some(last)
    };
    let path = api.team_path(&format!("/sessions/{session_id}/events"));
    let resume = (from > 1).then(|| (from - 1).to_string());
    sse::follow(api, &path, resume, |event| {
        let data = event.json();
        match output {
            Output::Json => emit(&format!("{}\n", serde_json::to_string(&data)?))?,
            Output::Text => emit(&format!("{}\n", line(&data, style)))?,
        }
        Ok(match last {
            Some(last) if number(&data["offset"]) >= last => Next::Stop,
            _ => Next::Continue,
        })
    })
    .await
}

/// One session event as a line: offset, then what happened.
pub fn line(event: &Value, style: Style) -> String {
    let p = &event["payload"];
    let what = match text(&event["kind"]).as_str() {
        "assistantMessage" => text(&p["text"]).trim().to_owned(),
        "toolCall" => format!(
            "{} {}",
            style.paint("36", &format!("→ {}", text(&p["name"]))),
            clip(&text(&p["inputJson"]), 160)
        ),
        "toolResult" => {
            let mark = if p["isError"].as_bool() == Some(true) {
                style.paint("31", "← error")
            } else {
                style.paint("36", "←")
            };
            format!("{mark} {}", clip(&text(&p["output"]), 160))
        }
        "fileChange" => {
            let kind = state_name(&p["kind"], "CHANGE_KIND_");
            let renamed = text(&p["oldPath"]);
            format!(
                "{} {}{} (+{} -{})",
                style.paint("33", &format!("file {kind}")),
                if renamed.is_empty() {
                    String::new()
                } else {
                    format!("{renamed} → ")
                },
                text(&p["path"]),
                number(&p["linesAdded"]),
                number(&p["linesRemoved"]),
            )
        }
        "usage" => style.dim(&format!(
            "usage {} in, {} out tokens, {}",
            number(&p["inputTokens"]),
            number(&p["outputTokens"]),
            usd(number(&p["costMicroUsd"]))
        )),
        "state" => {
            let reason = text(&p["reason"]);
            let from = state_name(&p["from"], "SESSION_STATE_");
            format!(
                "{} {}{}{}",
                style.bold("state"),
                if from.is_empty() {
                    String::new()
                } else {
                    format!("{from} → ")
                },
                state_name(&p["to"], "SESSION_STATE_"),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            )
        }
        "error" => style.paint(
            "31",
            &format!("error {}: {}", text(&p["code"]), text(&p["message"])),
        ),
        "runtimeStarted" => format!(
            "started in {} (confinement {}) on {} from {}",
            text(&p["runtime"]),
            text(&p["confinement"]),
            text(&p["branch"]),
            text(&p["baseCommit"])
        ),
        "agentState" => style.dim(&format!(
            "agent {} {}",
            text(&p["state"]),
            text(&p["reason"])
        )),
        "raw" => style.dim(&clip(&text(&p["text"]), 200)),
        other => format!("{other} {p}"),
    };
    format!(
        "{} {what}",
        style.dim(&format!("{:>4}", number(&event["offset"])))
    )
}

/// `text` on one line, at most `max` characters.
fn clip(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut clipped: String = one_line.chars().take(max).collect();
    clipped.push('…');
    clipped
}

/// `godel watch <ses_…>`: follows the session's log until it ends.
pub async fn watch(
    api: &Api,
    session_id: &str,
    output: Output,
    style: Style,
) -> anyhow::Result<ExitCode> {
    logs(api, session_id, true, 1, output, style).await?;
    let now = api
        .get(&api.team_path(&format!("/sessions/{session_id}")))
        .await?;
    let state = state_name(&now["session"]["state"], "SESSION_STATE_");
    if output == Output::Text {
        emit(&format!("Session {session_id} {state}.\n"))?;
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
    fn events_read_as_lines() {
        let plain = Style { color: false };
        let change = json!({"offset": 7, "kind": "fileChange",
            "payload": {"path": "src/lib.rs", "kind": "CHANGE_KIND_MODIFIED", "linesAdded": 3}});
        assert_eq!(
            line(&change, plain),
            "   7 file modified src/lib.rs (+3 -0)"
        );
        let state = json!({"offset": "8", "kind": "state", "payload":
            {"from": "SESSION_STATE_RUNNING", "to": "SESSION_STATE_SUCCEEDED"}});
        assert_eq!(line(&state, plain), "   8 state running → succeeded");
        let first = json!({"offset": 1, "kind": "state", "payload":
            {"to": "SESSION_STATE_PENDING", "reason": "accepted"}});
        assert_eq!(line(&first, plain), "   1 state pending (accepted)");
        let call = json!({"offset": 2, "kind": "toolCall",
            "payload": {"name": "bash", "inputJson": "{\"cmd\":\n \"ls\"}"}});
        assert_eq!(line(&call, plain), "   2 → bash {\"cmd\": \"ls\"}");
    }
}
