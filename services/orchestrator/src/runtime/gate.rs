//! Quality gates: a repository's own check (usually its test command) run in a
//! task's worktree after an agent changed the code. The gate's exit status decides —
//! unlike an agent's, a test command's exit code is the truth — and a failed gate
//! fails the task with the end of its output attached.
//!
//! Where the gate comes from: the task payload's `gate` object (set by the plan),
//! else the repository's `godel.toml`:
//!
//! ```toml
//! [gate]
//! command = "cargo test --quiet"   # run with `sh -c` in the worktree
//! timeout = "20m"                  # default 30m
//! ```
//!
//! The gate runs like an agent: its own process group, a cleared environment plus
//! the allow-list, a private home, the agent's filesystem confinement (it runs code
//! the agent wrote) and a wall-clock limit.

use std::path::Path;
use std::time::Duration;

use godel_error::Error;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::event::{EventBody, OutputStream};
use super::process::{self, AgentSpec};

/// The repository file a gate is read from.
pub const CONFIG_FILE: &str = "godel.toml";

/// How much of a gate's output is kept with its outcome.
const OUTPUT_TAIL_BYTES: usize = 16 * 1024;

/// A gate to run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// A shell command (`sh -c`), run in the worktree.
    pub command: String,
    #[serde(default = "default_timeout", with = "godel_config::duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoConfig {
    gate: Option<Gate>,
}

/// The gate for a task: the payload's `gate` object, else the repository's
/// `godel.toml` in `worktree`, else none. A malformed gate is `invalid_argument`
/// (payload) or `failed_precondition` (the repository's file), naming the problem.
pub fn gate_for(worktree: &Path, payload: &serde_json::Value) -> Result<Option<Gate>, Error> {
    if let Some(gate) = payload.get("gate") {
        let gate: Gate = serde_json::from_value(gate.clone()).map_err(|e| {
            Error::invalid_argument("payload_json", format!("`gate` is not a gate: {e}"))
        })?;
        return checked(gate).map(Some);
    }
    let path = worktree.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::failed_precondition(format!(
                "cannot read the repository's {CONFIG_FILE}: {e}"
            )));
        }
    };
    let config: RepoConfig = toml::from_str(&text).map_err(|e| {
        Error::failed_precondition(format!("the repository's {CONFIG_FILE} is invalid: {e}"))
    })?;
    config.gate.map(checked).transpose()
}

fn checked(gate: Gate) -> Result<Gate, Error> {
    if gate.command.trim().is_empty() {
        return Err(Error::failed_precondition("a gate needs a command"));
    }
    if gate.timeout.is_zero() {
        return Err(Error::failed_precondition(
            "a gate's timeout must be above zero",
        ));
    }
    Ok(gate)
}

/// How a gate ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateOutcome {
    pub passed: bool,
    /// The exit code, when the command exited (not killed by a signal or the timeout).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// The last lines of its stdout and stderr, interleaved as they came (at most
    /// 16 KiB).
    pub output: String,
}

impl GateOutcome {
    /// One line for a task's error: what failed and how.
    pub fn summary(&self, gate: &Gate) -> String {
        match (self.timed_out, self.exit_code) {
            (true, _) => format!(
                "the quality gate `{}` did not finish within {}",
                gate.command,
                godel_config::duration::format(gate.timeout)
            ),
            (false, Some(code)) => {
                format!("the quality gate `{}` failed (exit {code})", gate.command)
            }
            (false, None) => format!("the quality gate `{}` was killed", gate.command),
        }
    }
}

/// Runs `gate` in `worktree` with its home at `home` (outside the worktree), with the
/// standard agent confinement (Landlock when `landlock` and the kernel has it).
pub async fn run(
    gate: &Gate,
    worktree: &Path,
    home: &Path,
    landlock: bool,
    cancel: &CancellationToken,
) -> Result<GateOutcome, process::ProcessError> {
    let mut spec = AgentSpec::new("/bin/sh", ["-c", gate.command.as_str()], worktree, home);
    spec.landlock = landlock;
    spec.limits.wall_clock = Some(gate.timeout);
    let report = process::run(&spec, cancel, |_| {}).await?;
    let mut output = String::new();
    for event in &report.events {
        let line = match &event.body {
            EventBody::Raw {
                stream: OutputStream::Stderr,
                text,
            } => text.as_str(),
            _ => event.raw.as_str(),
        };
        output.push_str(line);
        output.push('\n');
    }
    if output.len() > OUTPUT_TAIL_BYTES {
        let mut cut = output.len() - OUTPUT_TAIL_BYTES;
        while !output.is_char_boundary(cut) {
            cut += 1;
        }
        output = format!("[… earlier output cut]\n{}", &output[cut..]);
    }
    let exit_code = report.exit.and_then(|status| status.code());
    let timed_out = matches!(report.end, process::RunEnd::WallClock);
    Ok(GateOutcome {
        passed: exit_code == Some(0) && !timed_out,
        exit_code,
        timed_out,
        output,
    })
}
