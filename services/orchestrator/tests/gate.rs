//! Quality gates: where a gate comes from (payload over the repository's
//! `godel.toml`), and running one for real — pass, fail with its output, timeout.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use godel_error::ErrorCode;
use godel_orchestrator::runtime::gate::{Gate, gate_for, run};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[test]
fn the_gate_comes_from_the_payload_else_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let worktree = dir.path();
    assert_eq!(gate_for(worktree, &json!({})).unwrap(), None);

    std::fs::write(
        worktree.join("godel.toml"),
        "[gate]\ncommand = \"cargo test --quiet\"\n",
    )
    .unwrap();
    assert_eq!(
        gate_for(worktree, &json!({})).unwrap(),
        Some(Gate {
            command: "cargo test --quiet".into(),
            timeout: Duration::from_secs(1800),
        })
    );
    let planned = gate_for(
        worktree,
        &json!({"gate": {"command": "make check", "timeout": "5m"}}),
    )
    .unwrap()
    .unwrap();
    assert_eq!(planned.command, "make check");
    assert_eq!(planned.timeout, Duration::from_secs(300));

    let err = gate_for(worktree, &json!({"gate": {"cmd": "x"}})).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
    let err = gate_for(worktree, &json!({"gate": {"command": "  "}})).unwrap_err();
    assert!(err.message.contains("needs a command"), "{err:?}");
    std::fs::write(worktree.join("godel.toml"), "[gate]\ncommand = 7\n").unwrap();
    let err = gate_for(worktree, &json!({})).unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err:?}");
    assert!(err.message.contains("godel.toml is invalid"), "{err:?}");
}

fn gate(command: &str, timeout: Duration) -> Gate {
    Gate {
        command: command.into(),
        timeout,
    }
}

#[tokio::test]
async fn gates_pass_fail_with_their_output_and_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let worktree = dir.path().join("work");
    std::fs::create_dir(&worktree).unwrap();
    std::fs::write(worktree.join("hello.txt"), "hi\n").unwrap();
    let home = dir.path().join("home");
    let never = CancellationToken::new();
    let minute = Duration::from_secs(60);

    let ok = run(
        &gate("test -f hello.txt", minute),
        &worktree,
        &home,
        true,
        &never,
    )
    .await
    .unwrap();
    assert!(ok.passed, "{ok:?}");
    assert_eq!(ok.exit_code, Some(0));

    let failed = run(
        &gate(
            "echo 'running 3 tests'; echo 'assertion failed: left == right' >&2; exit 3",
            minute,
        ),
        &worktree,
        &home,
        true,
        &never,
    )
    .await
    .unwrap();
    assert!(!failed.passed);
    assert_eq!((failed.exit_code, failed.timed_out), (Some(3), false));
    assert!(
        failed.output.contains("running 3 tests"),
        "{}",
        failed.output
    );
    assert!(
        failed.output.contains("assertion failed"),
        "{}",
        failed.output
    );
    assert_eq!(
        failed.summary(&gate("cargo test", minute)),
        "the quality gate `cargo test` failed (exit 3)"
    );

    let slow = run(
        &gate("sleep 30", Duration::from_millis(300)),
        &worktree,
        &home,
        true,
        &never,
    )
    .await
    .unwrap();
    assert!(!slow.passed && slow.timed_out, "{slow:?}");
    assert!(
        slow.summary(&gate("sleep 30", Duration::from_millis(300)))
            .contains("did not finish")
    );

    // Long output keeps its end.
    let noisy = run(
        &gate("seq 1 20000; exit 1", minute),
        &worktree,
        &home,
        true,
        &never,
    )
    .await
    .unwrap();
    assert!(
        noisy.output.len() <= 16 * 1024 + 64,
        "{}",
        noisy.output.len()
    );
    assert!(noisy.output.starts_with("[… earlier output cut]"));
    assert!(
        noisy.output.trim_end().ends_with("20000"),
        "the end is kept"
    );
}
