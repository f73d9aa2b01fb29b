//! `godel task`, `session`, `watch <task|session>`, `key`, `profile`, `team`,
//! `audit query` and `completions` as a user runs them, against `godel up`: a task
//! run by the simulated agent followed to its end, its session's logs, a new API
//! key that works as GODEL_TOKEN, a profile stored and deleted, the audit trail of
//! it all, and `watch` exiting 1 on a cancelled task.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use std::process::Output;
use std::time::Duration;

use godel_test_utils::git::init_repo;
use serde_json::Value;
use support::{Up, godel, godel_as, json, start};

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(120);

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Submits a simulated-agent task on `repo` through `godel task submit`; its id.
async fn submit(up: &Up, repo: &str, duration_ms: u64) -> String {
    let payload = serde_json::json!({
        "repository": repo,
        "adapter": "sim",
        "prompt": "change something",
        "sim": {"edits": 2, "tokens_in": 100, "tokens_out": 50, "duration_ms": duration_ms},
    })
    .to_string();
    let submitted = json(
        &godel(
            up,
            &[
                "task",
                "submit",
                "--type",
                "implement",
                "--payload",
                &payload,
                "--output",
                "json",
            ],
            SHORT,
        )
        .await,
    );
    submitted["task"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tasks_sessions_keys_profiles_and_audit_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    init_repo(repo.path());
    let up = start(data.path()).await;

    let task = submit(&up, &repo.path().display().to_string(), 50).await;
    assert!(task.starts_with("tsk_"), "{task}");

    // watch follows the task's state changes and exits 0 once it succeeded.
    let watched = godel(&up, &["watch", &task], LONG).await;
    let text = stdout(&watched);
    assert!(text.contains(&format!("{task}  succeeded")), "{text}");

    let listed = stdout(&godel(&up, &["task", "list"], SHORT).await);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&task) && l.contains("succeeded")),
        "{listed}"
    );
    let shown = stdout(&godel(&up, &["task", "show", &task], SHORT).await);
    assert!(
        shown.contains("state     succeeded") && shown.contains("type      implement"),
        "{shown}"
    );

    // Its session: listed by task, its logs end (the session is over) and show the
    // agent's file changes; as JSON, one event object per line.
    let sessions = json(
        &godel(
            &up,
            &["session", "list", "--task", &task, "--output", "json"],
            SHORT,
        )
        .await,
    );
    let session = sessions["sessions"][0]["id"].as_str().unwrap().to_owned();
    assert!(session.starts_with("ses_"), "{sessions}");
    // The simulated agent calls no model: the usage it reports is the session's.
    let usage = &sessions["sessions"][0]["usage"];
    assert_eq!(
        (
            usage["inputTokens"].as_str(),
            usage["outputTokens"].as_str()
        ),
        (Some("100"), Some("50")),
        "{sessions}"
    );
    let logs = stdout(&godel(&up, &["session", "logs", &session], SHORT).await);
    assert!(logs.contains("file added"), "{logs}");
    assert!(logs.contains("→ succeeded"), "{logs}");
    let followed = stdout(&godel(&up, &["session", "logs", "-f", &session], SHORT).await);
    assert_eq!(
        followed, logs,
        "following an ended session prints the same log"
    );
    let lines = stdout(
        &godel(
            &up,
            &[
                "session", "logs", &session, "--output", "json", "--from", "2",
            ],
            SHORT,
        )
        .await,
    );
    let events: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events[0]["offset"], 2, "{lines}");
    assert!(events.iter().any(|e| e["kind"] == "fileChange"), "{lines}");
    assert_eq!(events.len() + 1, logs.lines().count(), "{lines}");
    let watched = godel(&up, &["watch", &session], SHORT).await;
    assert!(stdout(&watched).contains("succeeded"));

    // An API key's secret is printed once and works as GODEL_TOKEN.
    let created = stdout(
        &godel(
            &up,
            &["key", "create", "cli-test", "--permission", "tasks:read"],
            SHORT,
        )
        .await,
    );
    assert!(created.contains("shown only now"), "{created}");
    let secret = created
        .split_whitespace()
        .find(|w| w.starts_with("gdl_"))
        .unwrap_or_else(|| panic!("no secret in {created}"));
    let listed = stdout(&godel_as(&up, secret, &["task", "list"], SHORT).await);
    assert!(listed.contains(&task), "{listed}");
    let keys = stdout(&godel(&up, &["key", "list"], SHORT).await);
    assert!(
        keys.contains("cli-test") && !keys.contains(secret),
        "{keys}"
    );

    // Profiles: put, list, delete.
    let put = godel(
        &up,
        &[
            "profile",
            "put",
            "cli-fast",
            "--adapter",
            "sim",
            "--task-type",
            "implement",
            "--preference",
            "5",
        ],
        SHORT,
    )
    .await;
    let put = stdout(&put);
    assert!(
        put.contains("cli-fast") && put.contains("preference 5"),
        "{put}"
    );
    let profiles = stdout(&godel(&up, &["profile", "list"], SHORT).await);
    assert!(
        profiles
            .lines()
            .any(|l| l.starts_with("cli-fast") && l.contains("implement")),
        "{profiles}"
    );
    stdout(&godel(&up, &["profile", "delete", "cli-fast"], SHORT).await);
    let profiles = stdout(&godel(&up, &["profile", "list"], SHORT).await);
    assert!(!profiles.contains("cli-fast"), "{profiles}");

    let teams = json(&godel(&up, &["team", "list", "--output", "json"], SHORT).await);
    assert!(!teams["teams"].as_array().unwrap().is_empty(), "{teams}");
    let members = stdout(&godel(&up, &["team", "members"], SHORT).await);
    assert!(members.contains("team-admin"), "{members}");
    stdout(
        &godel(
            &up,
            &[
                "team",
                "roles",
                "create",
                "cli-reader",
                "--permission",
                "tasks:read",
            ],
            SHORT,
        )
        .await,
    );
    let roles = stdout(&godel(&up, &["team", "roles"], SHORT).await);
    assert!(
        roles.lines().any(|l| l.starts_with("cli-reader")
            && l.contains("custom")
            && l.contains("tasks:read")),
        "{roles}"
    );
    let quotas = stdout(
        &godel(
            &up,
            &["team", "quotas", "set", "--max-queued-tasks", "77"],
            SHORT,
        )
        .await,
    );
    assert!(quotas.contains("max queued tasks         77"), "{quotas}");
    let quotas = stdout(&godel(&up, &["team", "quotas"], SHORT).await);
    assert!(
        quotas.contains("77") && quotas.contains("max concurrent sessions  default"),
        "{quotas}"
    );
    let purged = stdout(&godel(&up, &["task", "dlq", "purge"], SHORT).await);
    assert_eq!(purged, "Purged 0 dead letters.\n");

    // The audit trail has the task's submission and the key's creation.
    let records = stdout(&godel(&up, &["audit", "query", "--limit", "200"], SHORT).await);
    assert!(records.contains("task.submit"), "{records}");
    assert!(records.contains("api_key.create"), "{records}");
    let only = json(
        &godel(
            &up,
            &["audit", "query", "--action", "api_key.", "--output", "json"],
            SHORT,
        )
        .await,
    );
    let actions: Vec<&str> = only["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(
        !actions.is_empty() && actions.iter().all(|a| a.starts_with("api_key.")),
        "{only}"
    );
    let future = json(
        &godel(
            &up,
            &[
                "audit",
                "query",
                "--since",
                "2999-01-01T00:00:00Z",
                "--output",
                "json",
            ],
            SHORT,
        )
        .await,
    );
    assert_eq!(future["records"], serde_json::json!([]), "{future}");
}

#[tokio::test]
async fn watch_exits_1_when_the_task_is_cancelled() {
    let data = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    init_repo(repo.path());
    let up = start(data.path()).await;
    let task = submit(&up, &repo.path().display().to_string(), 600_000).await;

    let args = ["watch", task.as_str()];
    let watching = godel(&up, &args, LONG);
    let cancel = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        stdout(&godel(&up, &["task", "cancel", &task], SHORT).await)
    };
    let (watched, cancelled) = tokio::join!(watching, cancel);
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    assert_eq!(
        watched.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&watched.stdout)
    );
    assert!(String::from_utf8_lossy(&watched.stdout).contains("cancelled"));
}

#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    let bash = std::process::Command::new(env!("CARGO_BIN_EXE_godel"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let script = stdout(&bash);
    assert!(
        script.contains("provider-key") && script.contains("complete"),
        "{script}"
    );
    let fish = std::process::Command::new(env!("CARGO_BIN_EXE_godel"))
        .args(["completions", "fish"])
        .output()
        .unwrap();
    assert!(stdout(&fish).contains("session"));
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_godel"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}
