//! `godel up` as a user runs it: the real binary, every service healthy, a clean exit
//! on SIGTERM within the grace period, and data kept across a restart.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use godel_test_utils::eventually;
use godel_test_utils::git::{git, init_repo};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// What the banner of `godel up` says about one service.
#[derive(Debug)]
struct Listed {
    name: String,
    http: String,
    grpc: String,
}

struct Up {
    child: Child,
    services: Vec<Listed>,
    gateway: String,
    /// The org-admin API key, printed only on the first start of a data directory.
    admin_key: Option<String>,
}

const GRACE: Duration = Duration::from_secs(10);

async fn start(data_dir: &Path) -> Up {
    start_exe(Path::new(env!("CARGO_BIN_EXE_godel")), data_dir).await
}

/// `godel up` run from `exe`.
async fn start_exe(exe: &Path, data_dir: &Path) -> Up {
    let mut child = Command::new(exe)
        .args([
            "up",
            "--base-port",
            "0",
            "--set",
            "telemetry.log_format=json",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn godel up");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut services = Vec::new();
    let mut gateway = None;
    let mut admin_key = None;
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["Godel", "is", "up:", url] => gateway = Some(url.to_string()),
                [name, http, "grpc", grpc] => services.push(Listed {
                    name: name.to_string(),
                    http: http.to_string(),
                    grpc: format!("http://{grpc}"),
                }),
                [key] if key.starts_with("gdl_") => admin_key = Some(key.to_string()),
                ["Stop", "with", "Ctrl-C."] => return,
                _ => {}
            }
        }
        panic!("godel up exited before printing its banner");
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("godel up printed its banner within 60 s");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Up {
        child,
        services,
        gateway: gateway.expect("the banner names the gateway URL"),
        admin_key,
    }
}

async fn assert_all_healthy(up: &Up) {
    let names: Vec<&str> = up.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["gateway", "auth", "scheduler", "orchestrator", "audit"]
    );
    let http = reqwest::Client::new();
    for service in &up.services {
        let url = format!("{}/readyz", service.http);
        eventually(
            &format!("{} ready", service.name),
            Duration::from_secs(20),
            || {
                let request = http.get(&url).send();
                async move { request.await.ok().filter(|r| r.status().is_success()) }
            },
        )
        .await;
        let live = http
            .get(format!("{}/livez", service.http))
            .send()
            .await
            .unwrap();
        assert!(
            live.status().is_success(),
            "{} /livez: {}",
            service.name,
            live.status()
        );
        let metrics = http
            .get(format!("{}/metrics", service.http))
            .send()
            .await
            .unwrap();
        assert!(metrics.status().is_success(), "{} /metrics", service.name);

        let channel = tonic::transport::Endpoint::from_shared(service.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(
            status,
            ServingStatus::Serving,
            "{} gRPC health",
            service.name
        );
    }
    assert_eq!(up.gateway, up.services[0].http);
}

/// Sends SIGTERM and returns how the process ended.
async fn stop(mut up: Up) -> std::process::ExitStatus {
    let pid = Pid::from_raw(up.child.id().expect("running") as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    tokio::time::timeout(GRACE + Duration::from_secs(5), up.child.wait())
        .await
        .expect("godel up exits within its grace period after SIGTERM")
        .unwrap()
}

#[tokio::test]
async fn every_service_is_healthy_and_sigterm_stops_it_cleanly_keeping_data() {
    let data = tempfile::tempdir().unwrap();

    let up = start(data.path()).await;
    assert_all_healthy(&up).await;
    let key = up
        .admin_key
        .clone()
        .expect("the first start prints the admin API key");
    let status = stop(up).await;
    assert!(status.success(), "godel up exited with {status}");

    for service in ["auth", "scheduler", "orchestrator", "audit"] {
        let db = data.path().join(format!("{service}.db"));
        assert!(db.is_file(), "{} exists after shutdown", db.display());
    }

    // Starting again on the same data: migrations find nothing to do, all healthy,
    // and the admin created on the first start is still there (no second key).
    let up = start(data.path()).await;
    assert_all_healthy(&up).await;
    assert_eq!(
        up.admin_key, None,
        "the key is printed once, not on every start"
    );
    assert!(key.len() > 40, "{key}");
    let status = stop(up).await;
    assert!(status.success(), "second run exited with {status}");
}

#[tokio::test]
async fn dump_config_prints_the_effective_configuration() {
    let output = Command::new(env!("CARGO_BIN_EXE_godel"))
        .args([
            "up",
            "--dump-config",
            "--base-port",
            "9100",
            "--set",
            "host=0.0.0.0",
        ])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("base_port = 9100"), "{text}");
    assert!(text.contains("host = \"0.0.0.0\""), "{text}");
}

#[tokio::test]
async fn a_bad_setting_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_godel"))
        .args(["up", "--set", "base_port=lots"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("base_port"), "{stderr}");
}

/// The whole loop in one process: a task submitted to the scheduler is dispatched to
/// the orchestrator, the simulated agent edits a worktree of a local repository, and
/// the task ends succeeded with the commit on the task's branch.
#[tokio::test]
async fn a_submitted_task_runs_to_success() {
    submitted_task_runs_to_success(Path::new(env!("CARGO_BIN_EXE_godel"))).await;
}

/// Built alone (`cargo run -p godel`, `cargo install --path services/godel`), `godel`
/// has no `godel-sim-agent` beside it: `godel up` runs the simulated agent as
/// `godel sim-agent`, and tasks still run.
#[tokio::test]
async fn godel_alone_runs_the_simulated_agent_itself() {
    let alone = tempfile::tempdir().unwrap();
    let exe = alone.path().join("godel");
    std::fs::copy(env!("CARGO_BIN_EXE_godel"), &exe).unwrap();
    assert!(!alone.path().join("godel-sim-agent").exists());
    let out = std::process::Command::new(&exe)
        .args([
            "sim-agent",
            "--duration-ms",
            "0",
            "--edits",
            "1",
            "--workdir",
        ])
        .arg(alone.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().last().unwrap().contains(r#""type":"done""#),
        "{text}"
    );
    submitted_task_runs_to_success(&exe).await;
}

async fn submitted_task_runs_to_success(exe: &Path) {
    use godel_proto::scheduler::v1 as pb;
    use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;

    let data = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    init_repo(repo.path());

    let up = start_exe(exe, data.path()).await;
    let scheduler = up
        .services
        .iter()
        .find(|s| s.name == "scheduler")
        .expect("the banner lists the scheduler")
        .grpc
        .clone();
    let mut client = SchedulerServiceClient::connect(scheduler).await.unwrap();
    let team = godel_types::TeamId::new().to_string();
    let payload = serde_json::json!({
        "repository": repo.path().display().to_string(),
        "adapter": "sim",
        "prompt": "change something",
        "sim": {"edits": 2, "tokens_in": 100, "tokens_out": 50, "duration_ms": 50},
    });
    let task = client
        .submit_task(pb::SubmitTaskRequest {
            team_id: team.clone(),
            task: Some(pb::TaskSpec {
                task_type: "implement".into(),
                payload_json: payload.to_string(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let done = eventually("the task succeeds", Duration::from_secs(60), || {
        let mut client = client.clone();
        let request = pb::GetTaskRequest {
            team_id: team.clone(),
            task_id: task.id.clone(),
        };
        async move {
            let task = client.get_task(request).await.ok()?.into_inner().task?;
            assert!(
                !matches!(
                    task.state(),
                    pb::TaskState::DeadLettered | pb::TaskState::Cancelled
                ),
                "the task ended {:?}: {}",
                task.state(),
                task.last_error
            );
            (task.state() == pb::TaskState::Succeeded).then_some(task)
        }
    })
    .await;
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    let commit = result["commit"]
        .as_str()
        .expect("the result names the commit");
    let branch = format!("godel/{}", task.id);
    assert_eq!(git(repo.path(), &["rev-parse", &branch]), commit);
    let status = stop(up).await;
    assert!(status.success(), "godel up exited with {status}");
}
