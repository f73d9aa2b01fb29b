//! The simulated agent behind the `godel-sim-agent` binary: a real process that
//! edits files in its working directory and reports what it does as JSONL, for demos,
//! tests and load, without a model.
//!
//! It works in `--edits` steps spread over `--duration-ms`. Each step writes
//! `<dir>/file-<n>.txt` (`--dir`, relative to the working directory, default `sim`;
//! `--lines-per-file` lines, each naming the directory and `--label`, so two runs
//! writing the same file with different directories or labels conflict when merged)
//! and prints, one JSON object a line:
//!
//! ```text
//! {"type":"message","text":"…"}
//! {"type":"tool_call","id":"call_<n>","name":"write_file","input":{"path":"…","lines":3}}
//! {"type":"tool_result","id":"call_<n>","output":"…","is_error":false}
//! {"type":"file_change","path":"sim/file-<n>.txt","kind":"added"|"modified","lines_added":3,"lines_removed":0}
//! {"type":"usage","input_tokens":…,"output_tokens":…,"cost_micro_usd":…}
//! ```
//!
//! and at the end either `{"type":"done","summary":"…"}` or, with probability
//! `--failure-rate` (drawn from a generator seeded by `--seed`),
//! `{"type":"error","code":"simulated_failure","message":"…"}`. On SIGINT it prints
//! `{"type":"interrupted","signal":"SIGINT"}` and exits with code 130. The usage events
//! add up to `--tokens-in`, `--tokens-out` and `--cost-micro-usd`. Exit codes: 0 when
//! done, `--failure-exit-code` (default 1) on a simulated failure, 2 when it cannot
//! write, 130 when interrupted — the outcome is in the event stream either way.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The simulated agent's flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "godel-sim-agent",
    about = "A simulated coding agent printing JSONL events"
)]
pub struct SimArgs {
    /// Total time the work takes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub duration_ms: u64,
    /// Number of file edits (one step each).
    #[arg(long, default_value_t = 3)]
    pub edits: u32,
    /// Lines written to each file.
    #[arg(long, default_value_t = 3)]
    pub lines_per_file: u32,
    /// Input tokens reported in total.
    #[arg(long, default_value_t = 1000)]
    pub tokens_in: u64,
    /// Output tokens reported in total.
    #[arg(long, default_value_t = 500)]
    pub tokens_out: u64,
    /// Cost reported in total, in millionths of a US dollar.
    #[arg(long, default_value_t = 0)]
    pub cost_micro_usd: u64,
    /// Probability (0.0–1.0) that the run ends with a simulated failure.
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Seed of the random generator deciding failures.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Exit code after a simulated failure (0 simulates an agent that exits 0 anyway).
    #[arg(long, default_value_t = 1)]
    pub failure_exit_code: u8,
    /// Directory, relative to the working directory, the files are written under.
    #[arg(long, default_value = "sim")]
    pub dir: String,
    /// Written into every line (for example the task), so the content of two runs
    /// differs.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Directory to work in; the current directory by default.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

/// How a simulated run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimOutcome {
    Done,
    Failed,
    Interrupted,
}

/// Runs the simulated agent until done, failed or `interrupt` resolves, printing its
/// events to `out`.
pub async fn simulate(
    args: &SimArgs,
    out: &mut impl Write,
    interrupt: impl Future<Output = ()>,
) -> std::io::Result<SimOutcome> {
    tokio::pin!(interrupt);
    let dir = args.workdir.clone().unwrap_or_else(|| PathBuf::from("."));
    let sub = args.dir.trim_end_matches('/');
    let sub = if sub.is_empty() { "." } else { sub };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let fails = rng.random_bool(args.failure_rate.clamp(0.0, 1.0));
    let steps = u64::from(args.edits.max(1));
    let pause = Duration::from_millis(args.duration_ms / steps);

    emit(
        out,
        json!({"type": "message", "text": "starting the simulated task"}),
    )?;
    for step in 0..args.edits {
        let path = format!("{sub}/file-{step}.txt");
        let call = format!("call_{step}");
        emit(
            out,
            json!({"type": "message", "text": format!("writing {path}")}),
        )?;
        emit(
            out,
            json!({"type": "tool_call", "id": call, "name": "write_file",
                   "input": {"path": path, "lines": args.lines_per_file}}),
        )?;
        let kind = write_file(&dir, &path, step, args)?;
        emit(
            out,
            json!({"type": "tool_result", "id": call, "is_error": false,
                   "output": format!("wrote {} lines to {path}", args.lines_per_file)}),
        )?;
        emit(
            out,
            json!({"type": "file_change", "path": path, "kind": kind,
                   "lines_added": args.lines_per_file, "lines_removed": 0}),
        )?;
        let share = |total: u64| total / steps + u64::from(u64::from(step) < total % steps);
        emit(
            out,
            json!({"type": "usage", "input_tokens": share(args.tokens_in),
                   "output_tokens": share(args.tokens_out),
                   "cost_micro_usd": share(args.cost_micro_usd)}),
        )?;
        if wait(pause, &mut interrupt).await {
            return interrupted(out);
        }
    }
    if args.edits == 0 {
        emit(
            out,
            json!({"type": "usage", "input_tokens": args.tokens_in,
                   "output_tokens": args.tokens_out, "cost_micro_usd": args.cost_micro_usd}),
        )?;
        if wait(pause, &mut interrupt).await {
            return interrupted(out);
        }
    }
    if fails {
        emit(
            out,
            json!({"type": "error", "code": "simulated_failure",
                   "message": "the simulated agent failed as configured"}),
        )?;
        return Ok(SimOutcome::Failed);
    }
    emit(
        out,
        json!({"type": "done", "summary": format!("edited {} files", args.edits)}),
    )?;
    Ok(SimOutcome::Done)
}

/// The binary's `main`: runs [`simulate`] on stdout, interrupted by SIGINT.
pub fn main(args: SimArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("godel-sim-agent: cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        // Registered before the first event, so an interrupt sent after any event
        // is handled rather than killing the process.
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        let interrupt = async {
            match signal {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        let mut stdout = std::io::stdout();
        match simulate(&args, &mut stdout, interrupt).await {
            Ok(SimOutcome::Done) => ExitCode::SUCCESS,
            Ok(SimOutcome::Failed) => ExitCode::from(args.failure_exit_code),
            Ok(SimOutcome::Interrupted) => ExitCode::from(130),
            Err(error) => {
                let _ = emit(
                    &mut stdout,
                    json!({"type": "error", "code": "io_error", "message": error.to_string()}),
                );
                ExitCode::from(2)
            }
        }
    })
}

fn write_file(dir: &Path, path: &str, step: u32, args: &SimArgs) -> std::io::Result<&'static str> {
    let full = dir.join(path);
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let kind = if full.exists() { "modified" } else { "added" };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&full)?;
    for line in 0..args.lines_per_file {
        writeln!(
            file,
            "line {line} of step {step} in {} by {:?} (seed {})",
            args.dir, args.label, args.seed
        )?;
    }
    Ok(kind)
}

/// Waits `pause`; true when interrupted first.
async fn wait(
    pause: Duration,
    interrupt: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => false,
        () = interrupt.as_mut() => true,
    }
}

fn interrupted(out: &mut impl Write) -> std::io::Result<SimOutcome> {
    emit(out, json!({"type": "interrupted", "signal": "SIGINT"}))?;
    Ok(SimOutcome::Interrupted)
}

fn emit(out: &mut impl Write, event: Value) -> std::io::Result<()> {
    writeln!(out, "{event}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::event::{EventBody, OutputStream, Verdict, judge, parse_line};
    use clap::Parser;

    fn args(extra: &[&str], dir: &Path) -> SimArgs {
        let mut argv = vec!["godel-sim-agent", "--duration-ms", "0", "--workdir"];
        let dir = dir.to_str().unwrap_or_default().to_owned();
        argv.push(&dir);
        argv.extend_from_slice(extra);
        SimArgs::parse_from(argv)
    }

    async fn events(args: &SimArgs) -> (SimOutcome, Vec<crate::runtime::event::SessionEvent>) {
        let mut out = Vec::new();
        let outcome = simulate(args, &mut out, std::future::pending())
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let events = text
            .lines()
            .map(|line| parse_line(OutputStream::Stdout, line))
            .collect();
        (outcome, events)
    }

    #[tokio::test]
    async fn usage_adds_up_and_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let args = args(
            &["--edits", "3", "--tokens-in", "100", "--tokens-out", "10"],
            dir.path(),
        );
        let (outcome, events) = events(&args).await;
        assert_eq!(outcome, SimOutcome::Done);
        let (mut tokens_in, mut tokens_out) = (0, 0);
        for event in &events {
            if let EventBody::Usage {
                input_tokens,
                output_tokens,
                ..
            } = event.body
            {
                tokens_in += input_tokens;
                tokens_out += output_tokens;
            }
        }
        assert_eq!((tokens_in, tokens_out), (100, 10));
        assert_eq!(judge(&events), Verdict::Succeeded);
        for n in 0..3 {
            let text =
                std::fs::read_to_string(dir.path().join(format!("sim/file-{n}.txt"))).unwrap();
            assert_eq!(text.lines().count(), 3);
        }
    }

    #[tokio::test]
    async fn files_go_under_dir_and_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let args = args(
            &["--edits", "1", "--dir", "sim/api", "--label", "t1"],
            dir.path(),
        );
        let (outcome, events) = events(&args).await;
        assert_eq!(outcome, SimOutcome::Done);
        let text = std::fs::read_to_string(dir.path().join("sim/api/file-0.txt")).unwrap();
        assert!(text.contains("in sim/api by \"t1\""), "{text}");
        assert!(!dir.path().join("sim/file-0.txt").exists());
        assert!(events.iter().any(|e| matches!(
            &e.body,
            EventBody::FileChange { path, .. } if path == "sim/api/file-0.txt"
        )));
    }

    #[tokio::test]
    async fn failures_follow_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let always = args(&["--failure-rate", "1.0"], dir.path());
        assert_eq!(events(&always).await.0, SimOutcome::Failed);
        let never = args(&["--failure-rate", "0.0"], dir.path());
        assert_eq!(events(&never).await.0, SimOutcome::Done);
        let outcomes = |seed: u64| {
            let dir = dir.path().to_owned();
            async move {
                let mut seen = Vec::new();
                for n in 0..8 {
                    let seed = (seed + n).to_string();
                    let a = args(
                        &["--failure-rate", "0.5", "--seed", &seed, "--edits", "0"],
                        &dir,
                    );
                    seen.push(events(&a).await.0);
                }
                seen
            }
        };
        assert_eq!(outcomes(7).await, outcomes(7).await);
    }

    #[tokio::test]
    async fn an_interrupt_ends_with_an_interrupted_event() {
        let dir = tempfile::tempdir().unwrap();
        let args = args(&["--edits", "1"], dir.path());
        let mut args = args;
        args.duration_ms = 60_000;
        let mut out = Vec::new();
        let outcome = simulate(&args, &mut out, std::future::ready(()))
            .await
            .unwrap();
        assert_eq!(outcome, SimOutcome::Interrupted);
        let text = String::from_utf8(out).unwrap();
        let last = parse_line(OutputStream::Stdout, text.lines().last().unwrap());
        assert!(matches!(last.body, EventBody::Error { ref code, .. } if code == "interrupted"));
    }
}
