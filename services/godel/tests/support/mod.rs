//! Shared by the tests that run `godel` as a user does: `godel up` started in the
//! background, and `godel <args>` run against it.

#![allow(clippy::unwrap_used, dead_code)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Up {
    _child: Child,
    pub gateway: String,
    pub admin_key: String,
}

pub async fn start(data_dir: &Path) -> Up {
    start_with(data_dir, &[]).await
}

/// `godel up` with `--set` for each of `settings`.
pub async fn start_with(data_dir: &Path, settings: &[String]) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_godel"))
        .args([
            "up",
            "--base-port",
            "0",
            "--set",
            "telemetry.log_format=json",
        ])
        .args(settings.iter().flat_map(|s| ["--set", s.as_str()]))
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn godel up");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut gateway, mut admin_key) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["Godel", "is", "up:", url] => gateway = Some(url.to_string()),
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
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Up {
        _child: child,
        gateway: gateway.unwrap(),
        admin_key: admin_key.unwrap(),
    }
}

/// Runs `godel <args>` against `up` (stdin not a terminal) within `limit`.
pub async fn godel(up: &Up, args: &[&str], limit: Duration) -> Output {
    godel_as(up, &up.admin_key, args, limit).await
}

/// Runs `godel <args>` against `up` with `token` as GODEL_TOKEN.
pub async fn godel_as(up: &Up, token: &str, args: &[&str], limit: Duration) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_godel"))
        .args(args)
        .env("GODEL_SERVER", &up.gateway)
        .env("GODEL_TOKEN", token)
        .env_remove("GODEL_TEAM")
        .stdin(Stdio::null())
        .output();
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("godel {args:?} ended within {limit:?}"))
        .unwrap()
}

pub fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
