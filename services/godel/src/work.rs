//! `godel do`, `godel plan …` and `godel watch` (of a plan): describing work in words,
//! reviewing the plan Godel makes of it, and following it to its end — through the
//! gateway's REST API ([`crate::rest`]).
//!
//! Exit codes: 0 done (submitted, shown; `watch`: the plan succeeded), 1 the plan
//! failed or was cancelled (`watch`), 2 an error (printed with its fix), 3 the plan
//! was not approved.

pub(crate) mod render;
mod repo;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cli::{ApiArgs, DoArgs, Output, PlanArgs, PlanCommand, WatchArgs};
use crate::rest::Api;
use render::{Style, state_name, text};

/// The plan (task, session) failed or was cancelled.
pub(crate) const EXIT_PLAN_FAILED: u8 = 1;
/// The command could not do its job.
const EXIT_ERROR: u8 = 2;
/// The plan was not approved.
const EXIT_NOT_APPROVED: u8 = 3;

/// Runs `work` on a runtime; an error is printed and exits [`EXIT_ERROR`].
pub(crate) fn run<F>(work: F) -> anyhow::Result<ExitCode>
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(work) {
        Ok(code) => Ok(code),
        Err(err) => {
            eprintln!("godel: {err:#}");
            Ok(ExitCode::from(EXIT_ERROR))
        }
    }
}

pub(crate) fn style(api: &ApiArgs) -> Style {
    Style {
        color: api.output == Output::Text && std::io::stdout().is_terminal(),
    }
}

/// Writes `text` to stdout; a reader that went away (`| head`) ends the output
/// quietly.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to stdout"),
    }
}

pub(crate) fn print_json(value: &Value) -> anyhow::Result<()> {
    emit(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// What the agents of a plan's running tasks did last, one event-stream follower
/// per task, for `godel watch <plan>` to show beneath the tree.
#[derive(Clone, Default)]
struct Activity {
    /// Task id → the latest line of its session's log (`None`: followed, nothing yet).
    latest: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

impl Activity {
    /// Starts following the session of every running task of `view` not followed yet.
    fn follow_running(&self, api: &Api, view: &Value, style: Style) {
        let Ok(mut latest) = self.latest.lock() else {
            return;
        };
        for task in view["tasks"].as_array().into_iter().flatten() {
            let id = text(&task["task"]["id"]);
            if state_name(&task["task"]["state"], "TASK_STATE_") != "running"
                || latest.contains_key(&id)
            {
                continue;
            }
            latest.insert(id.clone(), None);
            let (api, activity) = (api.clone(), self.clone());
            tokio::spawn(async move {
                // The output is a view: a task whose log cannot be read shows none.
                let _ = activity.follow(&api, &id, style).await;
            });
        }
    }

    /// Follows the newest session of `task` to its end, keeping its latest line.
    async fn follow(&self, api: &Api, task: &str, style: Style) -> anyhow::Result<()> {
        let list = api.team_path(&format!(
            "/sessions{}",
            crate::rest::query(&[
                ("task_id", Some(task.to_owned())),
                ("page_size", Some("1".to_owned()))
            ])
        ));
        let mut session = None;
        for _ in 0..20 {
            let listed = api.get(&list).await?;
            if let Some(id) = listed["sessions"][0]["id"].as_str() {
                session = Some(id.to_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let Some(session) = session else {
            return Ok(());
        };
        let events = api.team_path(&format!("/sessions/{session}/events"));
        crate::sse::follow(api, &events, None, |event| {
            let event = event.json();
            if text(&event["kind"]) != "state"
                && let Ok(mut latest) = self.latest.lock()
            {
                let line = crate::session::line(&event, style);
                latest.insert(task.to_owned(), Some(line.trim_start().to_owned()));
            }
            Ok(crate::sse::Next::Continue)
        })
        .await
    }

    /// A line per running task of `view` with what its agent did last.
    fn lines(&self, view: &Value) -> String {
        let Ok(latest) = self.latest.lock() else {
            return String::new();
        };
        let mut out = String::new();
        for task in view["tasks"].as_array().into_iter().flatten() {
            let id = text(&task["task"]["id"]);
            if state_name(&task["task"]["state"], "TASK_STATE_") != "running" {
                continue;
            }
            if let Some(Some(line)) = latest.get(&id) {
                out.push_str(&format!("  ▸ {}: {line}\n", text(&task["task"]["planKey"])));
            }
        }
        out
    }
}

/// `godel do`.
pub fn run_do(args: DoArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        // Resolve the base commit first: a wrong --repo fails before anything else.
        let repository = if args.dry_run {
            None
        } else {
            Some(repo::resolve(&args.repo, args.git_ref.as_deref())?)
        };
        let api = Api::connect(&args.api).await?;
        let style = style(&args.api);
        let planned = api
            .post(
                &api.team_path("/intents"),
                &json!({"text": args.text, "planner": args.planner.as_str(), "dry_run": true}),
            )
            .await?;
        let mut intent = planned["intent"].clone();
        if let Some(profile) = &args.profile {
            // The server validates the plan again: an unknown profile is refused there.
            for node in intent["nodes"].as_array_mut().into_iter().flatten() {
                node["profile"] = json!(profile);
            }
        }
        let Some(repository) = repository else {
            match args.api.output {
                Output::Json => print_json(&planned)?,
                Output::Text => emit(&render::intent(&intent, style))?,
            }
            return Ok(ExitCode::SUCCESS);
        };
        if args.api.output == Output::Text {
            emit(&render::intent(&intent, style))?;
        }
        if !args.yes && !approved()? {
            eprintln!("Not submitted.");
            return Ok(ExitCode::from(EXIT_NOT_APPROVED));
        }
        let gate = args.gate.as_ref().map(|command| {
            json!({"command": command, "timeout": args.gate_timeout.clone().unwrap_or_default()})
        });
        let submitted = api
            .post(
                &api.team_path("/plans"),
                &json!({
                    "text": args.text,
                    "repository": {
                        "url": repository.url,
                        "ref": repository.git_ref,
                        "commit": repository.commit,
                    },
                    "gate": gate,
                    "plan": intent,
                }),
            )
            .await?;
        let id = text(&submitted["plan"]["id"]);
        match args.api.output {
            Output::Json => {
                let mut out = submitted.clone();
                out["intent"] = intent;
                print_json(&out)?;
            }
            Output::Text => emit(&format!(
                "\nSubmitted plan {id} ({} tasks, base {}).\nFollow it: godel watch {id}\n",
                submitted["tasks"].as_array().map_or(0, Vec::len),
                repository.commit
            ))?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Asks on the terminal whether to submit; refuses (an error saying to pass
/// `--yes`) when there is no terminal to ask on.
fn approved() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "not submitted: approval is asked on a terminal and there is none; review the plan \
             (--dry-run) and pass --yes to submit it"
        );
    }
    eprint!("\nSubmit this plan? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `godel plan …`.
pub fn run_plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        let api = Api::connect(&args.api).await?;
        let style = style(&args.api);
        let json_out = args.api.output == Output::Json;
        match args.command {
            PlanCommand::List { limit } => {
                let listed = api
                    .get(&api.team_path(&format!("/plans?page_size={limit}")))
                    .await?;
                if json_out {
                    return print_json(&listed).map(|()| ExitCode::SUCCESS);
                }
                let plans = listed["plans"].as_array().cloned().unwrap_or_default();
                if plans.is_empty() {
                    emit("No plans yet. Make one: godel do \"<what you want>\" --repo <path>\n")?;
                }
                for p in &plans {
                    emit(&format!(
                        "{}  {:<10} {:>3}/{:<3} {}  {}\n",
                        text(&p["id"]),
                        state_name(&p["state"], "PLAN_STATE_"),
                        render::number(&p["succeededCount"]),
                        render::number(&p["taskCount"]),
                        style.dim(&text(&p["createdAt"])),
                        text(&p["name"])
                    ))?;
                }
            }
            PlanCommand::Show { plan_id } => {
                let view = api
                    .get(&api.team_path(&format!("/plans/{plan_id}")))
                    .await?;
                if json_out {
                    return print_json(&view).map(|()| ExitCode::SUCCESS);
                }
                emit(&render::plan_view(&view, style))?;
            }
            PlanCommand::Cancel { plan_id, reason } => {
                let cancelled = api
                    .post(
                        &api.team_path(&format!("/plans/{plan_id}/cancel")),
                        &json!({"reason": reason}),
                    )
                    .await?;
                if json_out {
                    return print_json(&cancelled).map(|()| ExitCode::SUCCESS);
                }
                emit(&format!(
                    "Plan {plan_id} is {}.\n",
                    state_name(&cancelled["plan"]["state"], "PLAN_STATE_")
                ))?;
            }
            PlanCommand::Rollback { plan_id, reason } => {
                let rolled = api
                    .post(
                        &api.team_path(&format!("/plans/{plan_id}/rollback")),
                        &json!({"reason": reason}),
                    )
                    .await?;
                if json_out {
                    return print_json(&rolled).map(|()| ExitCode::SUCCESS);
                }
                let base = text(&rolled["baseCommit"]);
                if rolled["rolledBack"].as_bool() == Some(true) {
                    emit(&format!(
                        "Rolled back plan {plan_id}: {} reset to {base}.\n",
                        text(&rolled["branch"])
                    ))?;
                } else {
                    emit(&format!(
                        "Plan {plan_id} was already rolled back ({} at {base}).\n",
                        text(&rolled["branch"])
                    ))?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `godel watch`: a plan here, a task or a session in their modules.
pub fn run_watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        let api = Api::connect(&args.api).await?;
        let style = style(&args.api);
        if args.id.starts_with("tsk_") {
            return crate::task::watch(&api, &args.id, args.api.output).await;
        }
        if args.id.starts_with("ses_") {
            return crate::session::watch(&api, &args.id, args.api.output, style).await;
        }
        if !args.id.starts_with("pln_") {
            anyhow::bail!(
                "`{}` is not a plan, task or session id; pass a `pln_…`, `tsk_…` or `ses_…` id",
                args.id
            );
        }
        let live = args.api.output == Output::Text && std::io::stdout().is_terminal();
        let path = api.team_path(&format!("/plans/{}", args.id));
        let activity = Activity::default();
        let interval = Duration::from_millis(args.interval_ms.max(50));
        let mut shown = String::new();
        let mut drawn_lines = 0;
        loop {
            let view = api.get(&path).await?;
            let state = state_name(&view["plan"]["state"], "PLAN_STATE_");
            let current = match args.api.output {
                Output::Json => serde_json::to_string(&view)?,
                Output::Text => {
                    activity.follow_running(&api, &view, style);
                    format!(
                        "{}{}",
                        render::plan_view(&view, style),
                        activity.lines(&view)
                    )
                }
            };
            if current != shown {
                if live && drawn_lines > 0 {
                    // Redraw in place: up over the last drawing, clear to the end.
                    emit(&format!("\x1b[{drawn_lines}A\x1b[J"))?;
                }
                if args.api.output == Output::Text && !live && !shown.is_empty() {
                    emit("\n")?;
                }
                emit(&current)?;
                if args.api.output == Output::Json {
                    emit("\n")?;
                }
                drawn_lines = current.lines().count();
                shown = current;
            }
            match state.as_str() {
                "running" | "" => tokio::time::sleep(interval).await,
                "succeeded" => return Ok(ExitCode::SUCCESS),
                _ => return Ok(ExitCode::from(EXIT_PLAN_FAILED)),
            }
        }
    })
}
