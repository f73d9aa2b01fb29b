//! Load tool for the orchestrator's sessions, with the simulated agent
//! (`godel-sim-agent`) on the worktree runtime: the orchestrator's session layer
//! (`godel_orchestrator::session::Sessions`, the store, the supervisors) runs in
//! this process on SQLite (or PostgreSQL with `--database-url`), so this process's
//! resident memory is the orchestrator's. Results and the commands are in
//! `docs/benchmarks.md`.
//!
//! Modes:
//! - `idle`: starts `--sessions` sessions whose agents wait (a long
//!   `duration_ms`), waits until every one runs, and reports the orchestrator's
//!   resident memory over its baseline per session (the control-plane cost of an
//!   idle session, agent processes excluded) and the agents' own average RSS.
//! - `start`: starts `--sessions` short sessions one after another on a warm
//!   repository cache (a `file://` URL cloned once, fetched before each session, as
//!   a remote repository is) and reports request → agent running latency: from the
//!   call to `Sessions::start` to the session's `running` state change (its agent
//!   process spawned in its new worktree).
//!
//! `--runtime inprocess` runs the simulated agent as a task of this process (no
//! agent process, no worktree): the session count and memory then measure Godel's
//! own per-session overhead.

use godel_bench_report as report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use godel_bus::MemoryBus;
use godel_orchestrator::session::{
    LogBody, Repository, SessionLimits, SessionState, Sessions, StartSpec,
};
use godel_orchestrator::{Migrator, SessionsConfig};
use godel_store::{DatabaseConfig, OutboxRelay, RelayConfig};
use godel_types::{OrchestratorId, SessionId, TaskId, TeamId};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Idle,
    Start,
}

/// Where the simulated agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Runtime {
    /// A process in a git worktree (production's runtime).
    Process,
    /// A task of the orchestrator (`"runtime": "inprocess"`).
    Inprocess,
}

/// Drives the orchestrator's sessions with the simulated agent and prints what it
/// measured.
#[derive(Debug, Parser)]
#[command(name = "orchestrator-load")]
struct Args {
    #[arg(value_enum)]
    mode: Mode,
    /// Sessions to hold (idle) or to start one after another (start).
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Sessions started at once while filling up (idle).
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// The orchestrator's database (`postgres://…`); a fresh SQLite file if unset.
    #[arg(long)]
    database_url: Option<String>,
    /// The simulated agent; `godel-sim-agent` next to this executable if unset.
    #[arg(long)]
    sim_agent: Option<PathBuf>,
    /// Confine agents with Landlock (as production does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    landlock: bool,
    /// Where the simulated agent runs.
    #[arg(long, value_enum, default_value_t = Runtime::Process)]
    runtime: Runtime,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let bench = Bench::new(&args).await?;
    match args.mode {
        Mode::Idle => bench.idle(args.sessions, args.parallel.max(1)).await?,
        Mode::Start => bench.start_latency(args.sessions).await?,
    }
    bench.sessions.shutdown().await;
    Ok(())
}

struct Bench {
    sessions: Sessions,
    runtime: Runtime,
    team: TeamId,
    repo_url: String,
    _root: tempfile::TempDir,
}

impl Bench {
    async fn new(args: &Args) -> Result<Self> {
        let root = tempfile::tempdir()?;
        let repo = root.path().join("repo");
        init_repo(&repo)?;
        let sim_agent = match &args.sim_agent {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("the executable has no directory")?
                .join("godel-sim-agent"),
        };
        if args.runtime == Runtime::Process && !sim_agent.is_file() {
            bail!(
                "no simulated agent at {} (build it: cargo build -p godel-orchestrator --bins, or pass --sim-agent)",
                sim_agent.display()
            );
        }
        let url = args.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                root.path().join("orchestrator.db").display()
            )
        });
        let database = DatabaseConfig {
            url: url.into(),
            max_connections: 8,
            ..DatabaseConfig::default()
        };
        let db = godel_store::connect(&database).await?;
        godel_store::migrate::<Migrator>(&db).await?;
        let relay = OutboxRelay::new(
            db.clone(),
            Arc::new(MemoryBus::default()),
            RelayConfig::new("orchestrator"),
        );
        let config = SessionsConfig {
            worktrees_dir: root.path().join("worktrees"),
            homes_dir: root.path().join("homes"),
            cache_dir: root.path().join("cache"),
            sim_agent_path: sim_agent,
            landlock: args.landlock,
            default_max_duration: Duration::from_secs(24 * 3600),
            interrupt_wait: Duration::from_secs(1),
            term_wait: Duration::from_secs(1),
            ..SessionsConfig::default()
        };
        let sessions = Sessions::new(db, relay.notifier(), config, OrchestratorId::new());
        Ok(Self {
            sessions,
            runtime: args.runtime,
            team: TeamId::new(),
            repo_url: format!("file://{}", repo.display()),
            _root: root,
        })
    }

    fn spec(&self, sim: serde_json::Value) -> StartSpec {
        StartSpec {
            team_id: self.team,
            task_id: TaskId::new(),
            epoch: 1,
            profile_id: None,
            adapter: Some("sim".to_owned()),
            repository: Repository {
                url: self.repo_url.clone(),
                git_ref: None,
            },
            prompt: "benchmark".to_owned(),
            task_type: "bench".to_owned(),
            payload: match self.runtime {
                Runtime::Process => json!({ "sim": sim }),
                Runtime::Inprocess => json!({ "sim": sim, "runtime": "inprocess" }),
            },
            limits: SessionLimits::default(),
        }
    }

    /// Starts a session and waits until its agent runs; returns how long that took.
    async fn start_one(&self, sim: serde_json::Value) -> Result<(SessionId, Duration)> {
        let begun = Instant::now();
        let started = self.sessions.start(self.spec(sim)).await?;
        let id = started.session.id;
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let sessions = self.sessions.clone();
        let team = self.team;
        let stream = tokio::spawn(async move { sessions.stream(team, id, 1, true, tx).await });
        let mut running = None;
        while let Some(event) = rx.recv().await {
            if let LogBody::StateChange { to, .. } = event.body {
                if to == SessionState::Running {
                    running = Some(begun.elapsed());
                    break;
                }
                if to.is_terminal() {
                    break;
                }
            }
        }
        drop(rx);
        let _ = stream.await;
        match running {
            Some(elapsed) => Ok((id, elapsed)),
            None => {
                let session = self.sessions.get(team, id).await?;
                bail!(
                    "session {id} ended before it ran: {}",
                    session.error.unwrap_or_default()
                )
            }
        }
    }

    /// Warms the repository cache (the first session clones it).
    async fn warm_up(&self) -> Result<()> {
        let (id, _) = self.start_one(json!({"duration_ms": 0})).await?;
        self.sessions.ended(self.team, id).await?;
        Ok(())
    }

    async fn idle(&self, n: usize, parallel: usize) -> Result<()> {
        self.warm_up().await?;
        let baseline = rss_kib(std::process::id()).context("reading this process's RSS")?;
        let begun = Instant::now();
        let mut ids = Vec::with_capacity(n);
        let mut started = 0;
        while started < n {
            let batch = parallel.min(n - started);
            let runs =
                (0..batch).map(|_| self.start_one(json!({"duration_ms": 86_400_000, "edits": 1})));
            for run in futures::future::join_all(runs).await {
                ids.push(run?.0);
            }
            started += batch;
        }
        let filled = begun.elapsed();
        let held = self.sessions.live_count();
        let rss = rss_kib(std::process::id()).context("reading this process's RSS")?;
        let agents: Vec<u64> = agent_pids(&ids).into_iter().filter_map(rss_kib).collect();
        let per_session = rss.saturating_sub(baseline) as f64 / n as f64;
        println!(
            "mode=idle runtime={:?} sessions={n} held={held} filled_in={:.1}s",
            self.runtime,
            filled.as_secs_f64()
        );
        println!(
            "orchestrator RSS: baseline={baseline} KiB with_sessions={rss} KiB per_idle_session={per_session:.1} KiB (control plane, agent processes excluded)"
        );
        if !agents.is_empty() {
            let sum: u64 = agents.iter().sum();
            println!(
                "agent processes: n={} avg_rss={:.0} KiB total={} KiB",
                agents.len(),
                sum as f64 / agents.len() as f64,
                sum
            );
        }
        Ok(())
    }

    async fn start_latency(&self, n: usize) -> Result<()> {
        self.warm_up().await?;
        let mut samples = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let (id, elapsed) = self.start_one(json!({"duration_ms": 0})).await?;
            samples.push(elapsed);
            ids.push(id);
        }
        for id in ids {
            self.sessions.ended(self.team, id).await?;
        }
        println!("mode=start sessions={n} (warm repository cache, sequential)");
        report::latencies("request → agent running", &samples);
        Ok(())
    }
}

/// The resident set size of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The processes whose environment names one of the sessions `ids`.
fn agent_pids(ids: &[SessionId]) -> Vec<u32> {
    let wanted: std::collections::HashSet<Vec<u8>> = ids
        .iter()
        .map(|id| format!("GODEL_SESSION_ID={id}").into_bytes())
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| wanted.contains(var)))
        })
        .collect()
}

/// A repository with one commit on `main`.
fn init_repo(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("README.md"), "benchmark repository\n")?;
    for args in [
        &["init", "--quiet", "--initial-branch=main"][..],
        &["add", "--all"],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "--quiet",
            "-m",
            "initial",
        ],
    ] {
        let status = Command::new("git").arg("-C").arg(dir).args(args).status()?;
        if !status.success() {
            bail!("git {args:?} failed in {}", dir.display());
        }
    }
    Ok(())
}
