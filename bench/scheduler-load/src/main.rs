//! Load tool for the scheduler: drives submit → dispatch → complete through the real
//! gRPC API, with the scheduler on PostgreSQL and NATS JetStream, and simulated
//! orchestrators that register, receive their dispatch events over NATS and complete
//! each task over gRPC. Results and the commands are in `docs/benchmarks.md`.
//!
//! Modes:
//! - `latency`: open loop — single-task submissions at a fixed rate whatever the
//!   answers; submit→dispatch latency is measured from each submission's scheduled
//!   time to its dispatch event reaching the orchestrator.
//! - `throughput`: closed loop — several submitters send batches back to back; the
//!   figure is tasks completed per second over the measured window.
//! - `fairness`: three teams (weights from `--weights`) each get the same backlog;
//!   their shares of dispatches are compared with their weights while all three still
//!   have work waiting.

mod fleet;
use godel_bench_report as report;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use godel_bus::BusConfig;
use godel_proto::scheduler::v1 as pb;
use godel_scheduler::queue::{Queue, TeamSettings};
use godel_scheduler::{Dependencies, QueueConfig, SchedulerConfig};
use godel_store::{DatabaseConfig, OutboxRelay, RelayConfig};
use godel_types::TeamId;
use tokio_util::sync::CancellationToken;

use fleet::{Client, Fleet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Latency,
    Throughput,
    Fairness,
}

/// Drives the scheduler through its gRPC API and prints what it measured.
#[derive(Debug, Parser)]
#[command(name = "scheduler-load")]
struct Args {
    #[arg(value_enum)]
    mode: Mode,
    /// PostgreSQL database; a fresh schema is created in it and dropped after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Submissions per second (latency mode).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Simulated orchestrators.
    #[arg(long, default_value_t = 4)]
    orchestrators: u32,
    /// Capacity of each simulated orchestrator.
    #[arg(long, default_value_t = 2000)]
    capacity: u32,
    /// Tasks per SubmitTasks call (throughput and fairness modes).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent submitters (throughput mode).
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    /// Team weights (fairness mode), e.g. 1:2:5.
    #[arg(long, default_value = "1:2:5")]
    weights: String,
    /// Backlog per team (fairness mode).
    #[arg(long, default_value_t = 20_000)]
    backlog: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // RUST_LOG=godel_scheduler=debug shows the scheduler's own view (batch sizes and
    // durations) on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let unique = format!(
        "bench_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let database = DatabaseConfig {
        url: args.database_url.clone().into(),
        schema: Some(unique.clone()),
        max_connections: 16,
        ..DatabaseConfig::default()
    };
    let bus = BusConfig::nats(&args.nats_url, &unique, &unique);
    let queue_config = QueueConfig {
        max_concurrent_per_team: 1_000_000,
        max_queued_per_team: 10_000_000,
        max_queue_depth: 10_000_000,
        dispatch_interval: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    let config = SchedulerConfig {
        server: godel_runtime::ServerConfig::local(),
        database: database.clone(),
        bus: bus.clone(),
        queue: queue_config.clone(),
        ..SchedulerConfig::default()
    };
    let deps = Dependencies::connect(&bus)
        .await
        .context("connecting to NATS")?;
    let shutdown = CancellationToken::new();
    let running = godel_scheduler::start(config, deps.clone(), shutdown.clone())
        .await
        .context("starting the scheduler")?;
    let endpoint = format!("http://{}", running.grpc_addr());
    println!("scheduler at {endpoint}, schema {unique}, stream {unique}");

    let outcome = run(&args, &endpoint, &deps, &database, queue_config).await;

    shutdown.cancel();
    let _ = running.wait().await;
    cleanup(&args, &unique).await;
    outcome
}

async fn run(
    args: &Args,
    endpoint: &str,
    deps: &Dependencies,
    database: &DatabaseConfig,
    queue_config: QueueConfig,
) -> Result<()> {
    let fleet = Fleet::start(endpoint, deps, args.orchestrators, args.capacity).await?;
    match args.mode {
        Mode::Latency => latency(args, endpoint, &fleet).await,
        Mode::Throughput => throughput(args, endpoint, &fleet).await,
        Mode::Fairness => fairness(args, endpoint, &fleet, database, queue_config).await,
    }
}

fn spec(n: u64) -> pb::TaskSpec {
    pb::TaskSpec {
        task_type: "bench.noop".into(),
        payload_json: format!(r#"{{"n":{n}}}"#),
        ..Default::default()
    }
}

/// Open loop: one SubmitTask per task at `rate`, each sent at its scheduled time
/// whether or not earlier ones were answered.
async fn latency(args: &Args, endpoint: &str, fleet: &Fleet) -> Result<()> {
    let client = fleet::connect(endpoint).await?;
    let team = TeamId::new().to_string();
    let total = args.rate * (args.warmup + args.duration);
    let warmup_until = Duration::from_secs(args.warmup);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    while sent < total {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * args.rate as f64) as u64;
        while sent < due.min(total) {
            let scheduled = start + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            let measured = scheduled.duration_since(start) >= warmup_until;
            let mut client = client.clone();
            let team = team.clone();
            let marks = fleet.marks();
            let errors = errors.clone();
            let n = sent;
            tokio::spawn(async move {
                match client
                    .submit_task(pb::SubmitTaskRequest {
                        team_id: team,
                        task: Some(spec(n)),
                    })
                    .await
                {
                    Ok(reply) => {
                        if let Some(task) = reply.into_inner().task {
                            marks.sent(task.id, scheduled, measured);
                        }
                    }
                    Err(status) => {
                        let n = errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n < 3 {
                            eprintln!("submit failed: {status}");
                        }
                    }
                }
            });
            sent += 1;
        }
    }
    let submitted_in = start.elapsed();
    fleet.wait_completed(total, Duration::from_secs(60)).await;
    let latencies = fleet.marks().latencies();
    println!(
        "latency mode: {total} tasks offered at {} tasks/s over {:.1} s ({} submit errors)",
        args.rate,
        submitted_in.as_secs_f64(),
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    report::latencies("submit→dispatch", &latencies);
    report::latencies(
        "lease commit→delivery (per dispatch event)",
        &fleet.marks().delivery(),
    );
    println!("completed: {}", fleet.completed());
    Ok(())
}

/// Closed loop: `submitters` tasks each send batches back to back; the figure is the
/// completion rate over the measured window.
async fn throughput(args: &Args, endpoint: &str, fleet: &Fleet) -> Result<()> {
    let stop = CancellationToken::new();
    let submitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for s in 0..args.submitters {
        let mut client: Client = fleet::connect(endpoint).await?;
        let stop = stop.clone();
        let submitted = submitted.clone();
        let batch = args.batch;
        let team = TeamId::new().to_string();
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let tasks = (0..batch).map(|i| spec(n + i as u64)).collect();
                n += batch as u64;
                match client
                    .submit_tasks(pb::SubmitTasksRequest {
                        team_id: team.clone(),
                        tasks,
                    })
                    .await
                {
                    Ok(_) => {
                        submitted.fetch_add(batch as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(status) => {
                        eprintln!("submitter {s}: {status}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let (c0, d0, s0) = (
        fleet.completed(),
        fleet.dispatched(),
        submitted.load(std::sync::atomic::Ordering::Relaxed),
    );
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let secs = t0.elapsed().as_secs_f64();
    let (c1, d1, s1) = (
        fleet.completed(),
        fleet.dispatched(),
        submitted.load(std::sync::atomic::Ordering::Relaxed),
    );
    stop.cancel();
    for h in handles {
        let _ = h.await;
    }
    println!(
        "throughput mode: {} submitters × batches of {} over {secs:.1} s",
        args.submitters, args.batch
    );
    println!("submitted:  {:>9.0} tasks/s", (s1 - s0) as f64 / secs);
    println!("dispatched: {:>9.0} tasks/s", (d1 - d0) as f64 / secs);
    println!("completed:  {:>9.0} tasks/s", (c1 - c0) as f64 / secs);
    Ok(())
}

/// Equal backlogs for teams weighted `--weights`; shares of dispatches while every
/// team still has work waiting.
async fn fairness(
    args: &Args,
    endpoint: &str,
    fleet: &Fleet,
    database: &DatabaseConfig,
    queue_config: QueueConfig,
) -> Result<()> {
    let weights: Vec<u32> = args
        .weights
        .split(':')
        .map(|w| w.parse::<u32>().context("--weights is like 1:2:5"))
        .collect::<Result<_>>()?;
    if weights.is_empty() {
        bail!("--weights names no team");
    }
    // Team weights are set the way an operator's tooling does, on the queue.
    let db = godel_store::connect(database).await?;
    let relay = OutboxRelay::new(
        db.clone(),
        Arc::new(godel_bus::MemoryBus::default()),
        RelayConfig::new("bench"),
    );
    let queue = Queue::new(db.clone(), relay.notifier(), queue_config);
    let teams: Vec<TeamId> = weights.iter().map(|_| TeamId::new()).collect();
    for (team, weight) in teams.iter().zip(&weights) {
        queue
            .set_team_settings(
                *team,
                TeamSettings {
                    weight: *weight,
                    ..TeamSettings::default()
                },
            )
            .await?;
    }
    // Hold dispatch until every backlog is in: the orchestrators drain afterwards.
    fleet.pause().await?;
    let mut client = fleet::connect(endpoint).await?;
    for team in &teams {
        let mut left = args.backlog;
        let mut n = 0u64;
        while left > 0 {
            let take = left.min(args.batch);
            client
                .submit_tasks(pb::SubmitTasksRequest {
                    team_id: team.to_string(),
                    tasks: (0..take).map(|i| spec(n + i as u64)).collect(),
                })
                .await?;
            n += take as u64;
            left -= take;
        }
    }
    let order = fleet.resume().await?;
    fleet
        .wait_completed(
            (args.backlog * teams.len()) as u64,
            Duration::from_secs(args.duration.max(60) * 10),
        )
        .await;
    // Shares over the dispatch order, up to the point where the first team ran dry.
    let order = order.lock().map(|o| o.clone()).unwrap_or_default();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut window = 0;
    for team in &order {
        let c = counts.entry(team.clone()).or_default();
        *c += 1;
        window += 1;
        if *c == args.backlog {
            break;
        }
    }
    let total_weight: u32 = weights.iter().sum();
    println!(
        "fairness mode: weights {}, backlog {} per team, window of {window} dispatches",
        args.weights, args.backlog
    );
    let mut worst_abs: f64 = 0.0;
    let mut worst_rel: f64 = 0.0;
    for (team, weight) in teams.iter().zip(&weights) {
        let got = counts.get(&team.to_string()).copied().unwrap_or(0) as f64 / window as f64;
        let want = f64::from(*weight) / f64::from(total_weight);
        worst_abs = worst_abs.max((got - want).abs());
        worst_rel = worst_rel.max((got - want).abs() / want);
        println!(
            "  weight {weight}: share {:.2} % (expected {:.2} %)",
            got * 100.0,
            want * 100.0
        );
    }
    println!(
        "fairness error: {:.2} percentage points at most, {:.2} % relative at most",
        worst_abs * 100.0,
        worst_rel * 100.0
    );
    db.close().await?;
    Ok(())
}

async fn cleanup(args: &Args, unique: &str) {
    if let Ok(db) = godel_store::connect(&DatabaseConfig {
        url: args.database_url.clone().into(),
        ..DatabaseConfig::default()
    })
    .await
    {
        use godel_store::sea_orm::ConnectionTrait;
        let conn = db.conn();
        let _ = conn
            .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{unique}\" CASCADE"))
            .await;
        let _ = db.close().await;
    }
    if let Ok(client) = async_nats::connect(args.nats_url.as_str()).await {
        let js = async_nats::jetstream::new(client);
        let _ = js.delete_stream(unique).await;
    }
}
