//! `godel do`, `godel plan` and `godel watch` as a user runs them, against `godel up`:
//! a dry run as JSON, a refusal to submit without a terminal or --yes, a submitted
//! plan based on the repository's HEAD, listing and showing it, and `watch`'s exit
//! code on plans that end; then the whole path end to end — parallel branches merged
//! behind the repository's quality gate, a failing gate rolled back, and the same
//! with a real agent (Pi) through the LLM proxy.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use godel_test_utils::eventually;
use godel_test_utils::git::{git, init_repo};
use serde_json::{Value, json};
use support::{Up, godel, json, start, start_with};
use tokio::process::Command;

const SHORT: Duration = Duration::from_secs(30);
const TEXT: &str = "Add a health endpoint";

#[tokio::test]
async fn godel_do_plans_submits_and_watch_exits_with_the_plans_outcome() {
    let data = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let head = init_repo(repo.path());
    let path = repo.path().display().to_string();
    let up = start(data.path()).await;

    // A dry run prints the plan and submits nothing.
    let dry = json(
        &godel(
            &up,
            &["do", TEXT, "--repo", &path, "--dry-run", "--output", "json"],
            SHORT,
        )
        .await,
    );
    let keys: Vec<&str> = dry["intent"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["implement-1", "test", "review"], "{dry}");
    assert_eq!(dry["intent"]["planner"], "deterministic");
    let listed = json(&godel(&up, &["plan", "list", "--output", "json"], SHORT).await);
    assert!(
        listed["plans"].as_array().is_none_or(Vec::is_empty),
        "{listed}"
    );

    // Without a terminal to ask on, it refuses unless --yes, and says so.
    let refused = godel(&up, &["do", TEXT, "--repo", &path], SHORT).await;
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--yes"), "{stderr}");
    // A repository that is not one is an error naming the fix.
    let bad = godel(
        &up,
        &["do", TEXT, "--repo", "/no/such/repo", "--yes"],
        SHORT,
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--repo"));

    // With --yes it submits the plan, based on the repository's HEAD.
    let submitted = json(
        &godel(
            &up,
            &["do", TEXT, "--repo", &path, "--yes", "--output", "json"],
            SHORT,
        )
        .await,
    );
    let plan = submitted["plan"]["id"].as_str().unwrap().to_owned();
    assert!(plan.starts_with("pln_"), "{submitted}");
    let tasks = submitted["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    for task in tasks {
        let payload: Value =
            serde_json::from_str(task["task"]["payloadJson"].as_str().unwrap()).unwrap();
        assert_eq!(payload["plan"]["base"], head.as_str());
        assert_eq!(payload["repository"]["url"], path.as_str());
    }
    let listed = json(&godel(&up, &["plan", "list", "--output", "json"], SHORT).await);
    assert_eq!(listed["plans"][0]["id"], plan.as_str());
    let shown = json(&godel(&up, &["plan", "show", &plan, "--output", "json"], SHORT).await);
    assert_eq!(shown["tasks"].as_array().unwrap().len(), 3);
    let text = godel(&up, &["plan", "show", &plan], SHORT).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("└─ test") && !text.contains('\x1b'), "{text}");

    // `watch` follows it to its end (the simulated agent succeeds): exit 0, and the
    // plan's work is on its integration branch.
    let watched = godel(&up, &["watch", &plan], Duration::from_secs(180)).await;
    let shown = json(&godel(&up, &["plan", "show", &plan, "--output", "json"], SHORT).await);
    assert_eq!(shown["plan"]["state"], "PLAN_STATE_SUCCEEDED", "{shown}");
    assert_eq!(
        watched.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&watched.stdout)
    );
    let drawn = String::from_utf8_lossy(&watched.stdout);
    assert!(drawn.contains("3/3 tasks succeeded"), "{drawn}");
    let branch = format!("godel/plan-{plan}");
    assert_eq!(shown["integration"]["branch"], branch.as_str(), "{shown}");
    assert_eq!(
        shown["integration"]["headCommit"],
        git(repo.path(), &["rev-parse", &branch]).as_str()
    );
    assert_eq!(
        git(repo.path(), &["rev-parse", "main"]),
        head,
        "main never moves"
    );

    // A cancelled plan (its slow gate keeps it running until then): `watch` exits 1.
    let second = json(
        &godel(
            &up,
            &[
                "do",
                "Fix the flaky login test",
                "--repo",
                &path,
                "--gate",
                "sleep 30",
                "--yes",
                "--output",
                "json",
            ],
            SHORT,
        )
        .await,
    );
    let second = second["plan"]["id"].as_str().unwrap().to_owned();
    let cancelled =
        json(&godel(&up, &["plan", "cancel", &second, "--output", "json"], SHORT).await);
    let state = cancelled["plan"]["state"].as_str().unwrap().to_owned();
    let watched = godel(&up, &["watch", &second, "--output", "json"], SHORT).await;
    let last: Value = serde_json::from_str(
        String::from_utf8_lossy(&watched.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["plan"]["state"], state.as_str());
    assert!(
        state == "PLAN_STATE_CANCELLED" || state == "PLAN_STATE_FAILED",
        "{cancelled}"
    );
    assert_eq!(watched.status.code(), Some(1), "{state}");
}

/// A repository with a test command in its `godel.toml`: the quality gate runs it
/// after each code-changing task.
fn sample_repository(dir: &Path) -> String {
    init_repo(dir);
    std::fs::write(
        dir.join("godel.toml"),
        "[gate]\ncommand = \"sh check.sh\"\ntimeout = \"2m\"\n",
    )
    .unwrap();
    // The project's "tests": pass once some work is in the tree.
    std::fs::write(
        dir.join("check.sh"),
        "set -e\nls sim >/dev/null\necho \"checks passed\"\n",
    )
    .unwrap();
    git(dir, &["add", "godel.toml", "check.sh"]);
    git(dir, &["commit", "--quiet", "-m", "add a test command"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// The plan's tasks by key: (state, dependencies' keys, last error, result).
fn tasks_by_key(
    shown: &Value,
) -> std::collections::BTreeMap<String, (String, Vec<String>, String, Value)> {
    let tasks = shown["tasks"].as_array().unwrap();
    let key_of: std::collections::BTreeMap<String, String> = tasks
        .iter()
        .map(|t| {
            (
                t["task"]["id"].as_str().unwrap().to_owned(),
                t["task"]["planKey"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    tasks
        .iter()
        .map(|t| {
            let deps = t["dependsOn"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| key_of[d.as_str().unwrap()].clone())
                .collect();
            let result = t["task"]["resultJson"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map_or(Value::Null, |r| serde_json::from_str(r).unwrap());
            (
                t["task"]["planKey"].as_str().unwrap().to_owned(),
                (
                    t["task"]["state"].as_str().unwrap().to_owned(),
                    deps,
                    t["task"]["lastError"].as_str().unwrap_or("").to_owned(),
                    result,
                ),
            )
        })
        .collect()
}

/// Files on `branch` of `repo`.
fn files_on(repo: &Path, branch: &str) -> Vec<String> {
    git(repo, &["ls-tree", "-r", "--name-only", branch])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The headline, end to end on `godel up`: a request naming three things becomes
/// three parallel implementation branches, then a test and a review; each branch's
/// work passes the repository's gate and is merged onto the plan's integration
/// branch; `watch` shows the tree and exits 0; the user's `main` never moves.
#[tokio::test]
async fn godel_do_runs_parallel_branches_merges_them_and_passes_the_gate() {
    let data = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let head = sample_repository(repo.path());
    let path = repo.path().display().to_string();
    let up = start(data.path()).await;

    let text = "Add a health endpoint, a metrics endpoint and a version endpoint";
    let submitted = json(
        &godel(
            &up,
            &["do", text, "--repo", &path, "--yes", "--output", "json"],
            SHORT,
        )
        .await,
    );
    let plan = submitted["plan"]["id"].as_str().unwrap().to_owned();
    let shown = json(&godel(&up, &["plan", "show", &plan, "--output", "json"], SHORT).await);
    let tasks = tasks_by_key(&shown);
    let implements: Vec<&String> = tasks
        .keys()
        .filter(|k| k.starts_with("implement"))
        .collect();
    assert_eq!(implements.len(), 3, "three parallel branches: {tasks:?}");
    for key in &implements {
        assert!(
            tasks[*key].1.is_empty(),
            "{key} waits for nothing: {tasks:?}"
        );
    }
    let mut test_deps = tasks["test"].1.clone();
    test_deps.sort();
    assert_eq!(
        test_deps,
        implements.iter().map(|k| (*k).clone()).collect::<Vec<_>>(),
        "the test waits for every branch"
    );

    let watched = godel(
        &up,
        &["watch", &plan, "--interval-ms", "100"],
        Duration::from_secs(240),
    )
    .await;
    let drawn = String::from_utf8_lossy(&watched.stdout).to_string();
    assert_eq!(watched.status.code(), Some(0), "{drawn}");
    assert!(drawn.contains("5/5 tasks succeeded"), "{drawn}");
    // Beneath the tree, what the running agents do.
    assert!(
        drawn.contains("▸ implement-"),
        "the agents' output is streamed: {drawn}"
    );
    for key in implements
        .iter()
        .map(|k| k.as_str())
        .chain(["test", "review"])
    {
        assert!(drawn.contains(key), "watch shows {key}: {drawn}");
    }
    assert!(
        !drawn.contains('\x1b'),
        "no colours off a terminal: {drawn}"
    );

    let shown = json(&godel(&up, &["plan", "show", &plan, "--output", "json"], SHORT).await);
    let tasks = tasks_by_key(&shown);
    for key in &implements {
        let (state, _, _, result) = &tasks[*key];
        assert_eq!(state, "TASK_STATE_SUCCEEDED");
        assert_eq!(
            (&result["gate"]["command"], &result["gate"]["passed"]),
            (&json!("sh check.sh"), &json!(true)),
            "{key}'s gate ran the repository's test command: {result}"
        );
    }
    // Every branch's work is merged on the integration branch.
    let branch = format!("godel/plan-{plan}");
    let merged = files_on(repo.path(), &branch);
    for key in &implements {
        assert!(
            merged.iter().any(|f| f.starts_with(&format!("sim/{key}/"))),
            "{key}'s files are merged: {merged:?}"
        );
    }
    assert_eq!(
        shown["integration"]["headCommit"],
        git(repo.path(), &["rev-parse", &branch]).as_str()
    );
    assert_eq!(
        git(repo.path(), &["rev-parse", "main"]),
        head,
        "main never moves"
    );
}

/// A gate that fails after another branch was already merged: the node fails with
/// the gate's output, the rest of the plan is cancelled, and the integration branch
/// is reset to the commit the plan started from; `watch` exits 1.
#[tokio::test]
async fn a_failing_gate_rolls_the_plan_back_to_its_start() {
    let data = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let head = sample_repository(repo.path());
    let path = repo.path().display().to_string();
    let up = start(data.path()).await;

    // The second branch's gate fails, slowly enough that the first is merged by then.
    let gate = "if [ -d sim/implement-2 ]; then sleep 8; echo 'gate says no'; exit 3; fi";
    let submitted = json(
        &godel(
            &up,
            &[
                "do",
                "Add a health endpoint and a metrics endpoint",
                "--repo",
                &path,
                "--gate",
                gate,
                "--yes",
                "--output",
                "json",
            ],
            SHORT,
        )
        .await,
    );
    let plan = submitted["plan"]["id"].as_str().unwrap().to_owned();
    let watched = godel(&up, &["watch", &plan], Duration::from_secs(240)).await;
    let drawn = String::from_utf8_lossy(&watched.stdout).to_string();
    assert_eq!(watched.status.code(), Some(1), "{drawn}");

    let branch = format!("godel/plan-{plan}");
    let shown = eventually("the plan is rolled back", Duration::from_secs(60), || {
        let up = &up;
        let plan = plan.clone();
        async move {
            let shown = json(&godel(up, &["plan", "show", &plan, "--output", "json"], SHORT).await);
            (shown["integration"]["state"] == "rolled_back").then_some(shown)
        }
    })
    .await;
    assert_eq!(shown["plan"]["state"], "PLAN_STATE_FAILED", "{shown}");
    let tasks = tasks_by_key(&shown);
    assert_eq!(tasks["implement-1"].0, "TASK_STATE_SUCCEEDED", "{tasks:?}");
    let (state, _, error, _) = &tasks["implement-2"];
    assert_eq!(state, "TASK_STATE_DEAD_LETTERED", "{tasks:?}");
    assert!(error.contains("gate says no"), "the gate's output: {error}");
    for key in ["test", "review"] {
        assert_eq!(tasks[key].0, "TASK_STATE_CANCELLED", "{tasks:?}");
    }
    // implement-1 had been merged; the rollback took the branch back to the start.
    assert_eq!(git(repo.path(), &["rev-parse", &branch]), head);
    assert_eq!(
        git(repo.path(), &["rev-parse", "main"]),
        head,
        "main never moves"
    );
}

/// Where the test script installed the real agent CLIs.
fn agent_bin() -> std::path::PathBuf {
    std::env::var_os("AGENT_CLI_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/agents/node_modules/.bin"),
        std::path::PathBuf::from,
    )
}

/// The same with a real agent: Pi, pointed by `godel up` at a scripted model
/// provider, runs every task of the plan through Godel's LLM proxy with the team's
/// key set by `godel provider-key set`; the plan's work (the file Pi's own tool
/// wrote) is merged, and the provider saw the team's key.
#[tokio::test]
async fn godel_do_with_pi_runs_the_plan_through_the_llm_proxy() {
    const KEY: &str = "sk-team-openai-e2e-0123456789";
    let pi = agent_bin().join("pi");
    if !pi.exists() {
        let reason = format!(
            "Pi is not installed at {}; run scripts/agents.sh (or set AGENT_CLI_BIN)",
            pi.display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    let llm = godel_test_utils::llm::ScriptedLlm::start(godel_test_utils::llm::Script {
        path: "hello.txt".to_owned(),
        content: "hello from pi\n".to_owned(),
        ..Default::default()
    })
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let head = init_repo(repo.path());
    let path = repo.path().display().to_string();
    let up = start_with(
        data.path(),
        &[
            format!("agents.pi.program={}", pi.display()),
            format!("agents.providers.openai.base_url={}", llm.base_url()),
        ],
    )
    .await;

    let set = Command::new(env!("CARGO_BIN_EXE_godel"))
        .args([
            "provider-key",
            "set",
            "openai",
            "--from-env",
            "TEST_OPENAI_KEY",
        ])
        .env("GODEL_SERVER", &up.gateway)
        .env("GODEL_TOKEN", &up.admin_key)
        .env("TEST_OPENAI_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let listed = String::from_utf8_lossy(
        &godel(&up, &["provider-key", "list", "--output", "json"], SHORT)
            .await
            .stdout,
    )
    .to_string();
    assert!(
        listed.contains("openai") && !listed.contains(KEY),
        "{listed}"
    );

    let submitted = json(
        &godel(
            &up,
            &[
                "do",
                "Add a hello file",
                "--repo",
                &path,
                "--profile",
                "pi",
                "--yes",
                "--output",
                "json",
            ],
            SHORT,
        )
        .await,
    );
    let plan = submitted["plan"]["id"].as_str().unwrap().to_owned();
    for task in submitted["tasks"].as_array().unwrap() {
        let payload: Value =
            serde_json::from_str(task["task"]["payloadJson"].as_str().unwrap()).unwrap();
        assert_eq!(payload["adapter"], "pi", "{payload}");
    }
    let watched = godel(&up, &["watch", &plan], Duration::from_secs(300)).await;
    let drawn = String::from_utf8_lossy(&watched.stdout).to_string();
    assert_eq!(watched.status.code(), Some(0), "{drawn}");

    let branch = format!("godel/plan-{plan}");
    assert_eq!(
        git(repo.path(), &["show", &format!("{branch}:hello.txt")]),
        "hello from pi"
    );
    assert_eq!(
        git(repo.path(), &["rev-parse", "main"]),
        head,
        "main never moves"
    );
    let requests = llm.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(
            request.credential(),
            Some(KEY),
            "the provider saw the team's key, swapped in by the proxy"
        );
    }
}

/// `godel do <text> --dry-run --planner llm` as JSON.
async fn plan_with_llm(up: &Up, text: &str) -> Value {
    json(
        &godel(
            up,
            &[
                "do",
                text,
                "--repo",
                ".",
                "--dry-run",
                "--planner",
                "llm",
                "--output",
                "json",
            ],
            SHORT,
        )
        .await,
    )
}

/// The LLM planner on `godel up` asks through Godel's LLM proxy as the person
/// planning, with their team's provider key: the scripted provider's plan (two
/// parallel branches and a test) comes back validated; without a key the
/// deterministic planner plans and says why.
#[tokio::test]
async fn the_llm_planner_plans_through_the_proxy_with_the_teams_key() {
    const KEY: &str = "sk-team-openai-planner-0123456789";
    let answer = serde_json::json!({
        "summary": "Two endpoints, then their tests",
        "nodes": [
            {"key": "health", "task_type": "implement", "profile": "simulated",
             "prompt": "Add GET /health", "depends_on": []},
            {"key": "metrics", "task_type": "implement", "profile": "simulated",
             "prompt": "Add GET /metrics", "depends_on": []},
            {"key": "tests", "task_type": "test", "profile": "simulated",
             "prompt": "Test both endpoints", "depends_on": ["health", "metrics"]},
        ],
    });
    let llm = godel_test_utils::llm::ScriptedLlm::start(godel_test_utils::llm::Script {
        final_text: answer.to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let up = start_with(
        data.path(),
        &[format!(
            "agents.providers.openai.base_url={}",
            llm.base_url()
        )],
    )
    .await;
    let text = "Add a health endpoint and a metrics endpoint";

    // No provider key yet: the deterministic planner stands in, saying why.
    let planned = plan_with_llm(&up, text).await;
    assert_eq!(planned["intent"]["planner"], "deterministic", "{planned}");
    let reason = planned["intent"]["fallbackReason"].as_str().unwrap_or("");
    assert!(
        reason.contains("key"),
        "the reason names the missing key: {planned}"
    );
    assert_eq!(llm.requests().len(), 0, "nothing reached the provider");

    let set = Command::new(env!("CARGO_BIN_EXE_godel"))
        .args(["provider-key", "set", "openai"])
        .env("GODEL_SERVER", &up.gateway)
        .env("GODEL_TOKEN", &up.admin_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut set = set;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = set.stdin.take().unwrap();
        stdin
            .write_all(format!("{KEY}\n").as_bytes())
            .await
            .unwrap();
    }
    let set = set.wait_with_output().await.unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(!String::from_utf8_lossy(&set.stdout).contains(KEY));

    let planned = plan_with_llm(&up, text).await;
    assert_eq!(planned["intent"]["planner"], "llm", "{planned}");
    let keys: Vec<&str> = planned["intent"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["health", "metrics", "tests"], "{planned}");
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].credential(),
        Some(KEY),
        "the proxy swapped in the team's key for the caller's token"
    );
}
