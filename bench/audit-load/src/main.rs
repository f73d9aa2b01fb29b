//! Load tool for the audit log (see docs/benchmarks.md, "Audit").
//!
//! Against a fresh schema on a PostgreSQL server (fsync as the server has it, and
//! printed), it measures:
//!
//! 1. sustained batched appends through the library ([`AuditLog::append`]:
//!    redaction, chaining, one transaction per batch), by `--writers` concurrent
//!    appenders;
//! 2. the same through the gRPC `Append` of a running audit service;
//! 3. verification of everything appended ([`AuditLog::verify`]);
//! 4. the parts of an append on their own: redaction and hashing (CPU, one core)
//!    and the database time of a batch, so a missed target says what bounds it.
//!
//! Prints one line per figure. The schema is dropped at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use godel_audit::canonical::{Payload, record_hash};
use godel_audit::{
    Actor, ActorKind, AuditConfig, AuditLog, CheckpointConfig, Dependencies, Migrator, NewRecord,
    Outcome, RecordBody, RedactionConfig,
};
use godel_proto::audit::v1::audit_service_client::AuditServiceClient;
use godel_proto::audit::v1::{AppendRequest, AuditRecord};
use godel_proto::common::v1::Caller;
use godel_store::DatabaseConfig;
use godel_store::sea_orm::{ConnectionTrait, Statement};
use godel_types::{AuditRecordId, TeamId};

/// Measures audit append and verify throughput on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "audit-load")]
struct Args {
    /// The PostgreSQL server (a fresh schema is created in it and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Records appended through the library.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Records appended through gRPC (0: skip).
    #[arg(long, default_value_t = 100_000)]
    grpc_records: usize,
    /// Records per append (at most 1000).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Bytes of free text in each record's details (the rest is the usual fields).
    #[arg(long, default_value_t = 200)]
    detail_bytes: usize,
    /// Checkpoint every this many records (the service default is 1000).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=1000).contains(&args.batch),
        "--batch must be 1 to 1000"
    );
    let schema = format!(
        "audit_bench_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp()
    );
    let dir = tempfile::tempdir()?;
    let config = AuditConfig {
        server: godel_runtime::ServerConfig::local(),
        database: DatabaseConfig {
            url: args.database_url.clone().into(),
            schema: Some(schema.clone()),
            max_connections: 8,
            ..DatabaseConfig::default()
        },
        checkpoint: CheckpointConfig {
            dir: dir.path().join("checkpoints"),
            signing_key_file: dir.path().join("signing.key"),
            every_records: args.checkpoint_every,
            interval: Duration::from_secs(3600),
        },
        redaction: RedactionConfig {
            key_file: dir.path().join("pseudonym.key"),
            ..RedactionConfig::default()
        },
        ..AuditConfig::default()
    };
    let db = godel_store::connect(&config.database).await?;
    godel_store::migrate::<Migrator>(&db).await?;
    let result = run(&args, &config, &db).await;
    let drop = db
        .conn()
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    db.close().await?;
    drop.context("dropping the benchmark schema")?;
    result
}

async fn run(args: &Args, config: &AuditConfig, db: &godel_store::Db) -> anyhow::Result<()> {
    for setting in ["fsync", "synchronous_commit", "wal_sync_method"] {
        let row = db
            .conn()
            .query_one_raw(Statement::from_string(
                db.conn().get_database_backend(),
                format!("SHOW {setting}"),
            ))
            .await?
            .context("SHOW returned nothing")?;
        let value: String = row.try_get_by_index(0)?;
        println!("postgres {setting}: {value}");
    }
    let sample = record(0, args.detail_bytes);
    println!(
        "record: {} bytes of payload fields, batch {}, {} writers, checkpoint every {} records",
        payload_bytes(&sample),
        args.batch,
        args.writers,
        args.checkpoint_every
    );

    let log = Arc::new(AuditLog::open(db.clone(), config)?);

    // 1. Library appends.
    let (elapsed, batch_times) = append_library(args, &log).await?;
    report_append("library append", args.records, elapsed, &batch_times);

    // 2. gRPC appends.
    if args.grpc_records > 0 {
        let elapsed = append_grpc(args, config).await?;
        println!(
            "grpc append: {} records in {:.2} s = {:.0} records/s",
            args.grpc_records,
            elapsed.as_secs_f64(),
            args.grpc_records as f64 / elapsed.as_secs_f64()
        );
    }

    // 3. Verify everything.
    let started = Instant::now();
    let report = log.verify(0, 0).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(report.ok(), "verification failed: {report:?}");
    println!(
        "verify: {} records ({} checkpoints) in {:.2} s = {:.0} records/s",
        report.records_checked,
        report.checkpoints_matched,
        elapsed.as_secs_f64(),
        report.records_checked as f64 / elapsed.as_secs_f64()
    );

    // 4. The CPU parts on their own, on one core.
    cpu_parts(args, &log);
    Ok(())
}

/// A gateway-like API-call record with `detail_bytes` of free text.
fn record(i: usize, detail_bytes: usize) -> NewRecord {
    let team = TeamId::new();
    NewRecord {
        id: AuditRecordId::new(),
        occurred_at: chrono::Utc::now(),
        team_id: Some(team),
        body: RecordBody {
            actor: Actor {
                kind: ActorKind::User,
                subject_id: format!("usr_{:032x}", i % 997),
                team_id: Some(team),
                roles: vec!["member".to_owned()],
            },
            action: "task.submit".to_owned(),
            resource: format!("/v1/teams/{team}/tasks"),
            outcome: Outcome::Success,
            trace_id: format!("{:032x}", i + 1),
            client_ip: format!("10.0.{}.{}", (i / 256) % 256, i % 256),
            details_json: format!(
                r#"{{"method":"POST","status":201,"latency_ms":{},"note":"{}"}}"#,
                i % 500,
                "x".repeat(detail_bytes)
            ),
        },
    }
}

fn payload_bytes(r: &NewRecord) -> usize {
    let b = &r.body;
    b.actor.subject_id.len()
        + b.actor.roles.iter().map(String::len).sum::<usize>()
        + b.action.len()
        + b.resource.len()
        + b.trace_id.len()
        + b.client_ip.len()
        + b.details_json.len()
        + r.id.to_string().len()
        + r.team_id.map_or(0, |t| t.to_string().len())
}

async fn append_library(
    args: &Args,
    log: &Arc<AuditLog>,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let batches = args.records.div_ceil(args.batch);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.writers {
        let (log, next) = (log.clone(), next.clone());
        let (batch, detail) = (args.batch, args.detail_bytes);
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(times);
                }
                let records: Vec<_> = (0..batch).map(|i| record(b * batch + i, detail)).collect();
                let t = Instant::now();
                let outcome = log.append(records).await?;
                times.push(t.elapsed());
                anyhow::ensure!(outcome.appended as usize == batch, "short append");
            }
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await??);
    }
    Ok((started.elapsed(), times))
}

fn report_append(what: &str, records: usize, elapsed: Duration, times: &[Duration]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(i).copied().unwrap_or_default()
    };
    println!(
        "{what}: {records} records in {:.2} s = {:.0} records/s (batch latency p50 {:.1} ms, p99 {:.1} ms)",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
    );
}

fn to_proto(r: NewRecord) -> AuditRecord {
    AuditRecord {
        id: r.id.to_string(),
        occurred_at: Some(godel_proto::convert::to_timestamp(r.occurred_at)),
        team_id: r.team_id.map(|t| t.to_string()).unwrap_or_default(),
        actor: Some(Caller {
            subject_kind: r.body.actor.kind.number(),
            subject_id: r.body.actor.subject_id,
            team_id: r
                .body
                .actor
                .team_id
                .map(|t| t.to_string())
                .unwrap_or_default(),
            roles: r.body.actor.roles,
        }),
        action: r.body.action,
        resource: r.body.resource,
        outcome: r.body.outcome.number(),
        trace_id: r.body.trace_id,
        client_ip: r.body.client_ip,
        details_json: r.body.details_json,
        ..AuditRecord::default()
    }
}

async fn append_grpc(args: &Args, config: &AuditConfig) -> anyhow::Result<Duration> {
    let shutdown = tokio_util_token();
    let deps = Dependencies::connect(&godel_bus::BusConfig::default()).await?;
    // Callers are verified as in production: an Ed25519 access token per call,
    // from an issuer the service trusts, for the `audit-writer` role.
    let issuer = godel_test_utils::identity::TestIssuer::new();
    let running =
        godel_audit::start_with_verifier(config.clone(), deps, issuer.verifier(), shutdown.clone())
            .await?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr()))?
            .connect()
            .await?;
    let writer = godel_identity::BearerInterceptor::new(
        &issuer.org(&[godel_identity::OrgRole::AuditWriter]),
    )
    .map_err(|e| anyhow::anyhow!(e.message))?;
    let client = AuditServiceClient::with_interceptor(channel, writer)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let batches = args.grpc_records.div_ceil(args.batch);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.writers {
        let (mut client, next) = (client.clone(), next.clone());
        let (batch, detail) = (args.batch, args.detail_bytes);
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(());
                }
                let records = (0..batch)
                    .map(|i| to_proto(record(b * batch + i, detail)))
                    .collect();
                let outcome = client.append(AppendRequest { records }).await?.into_inner();
                anyhow::ensure!(outcome.appended as usize == batch, "short append");
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.wait().await?;
    Ok(elapsed)
}

fn tokio_util_token() -> tokio_util::sync::CancellationToken {
    tokio_util::sync::CancellationToken::new()
}

/// Redaction and hashing of one batch's worth of records, timed on this thread.
fn cpu_parts(args: &Args, log: &AuditLog) {
    let n = 20_000;
    let records: Vec<_> = (0..n).map(|i| record(i, args.detail_bytes)).collect();
    let redactor = log.redactor();
    let started = Instant::now();
    let mut payloads = Vec::with_capacity(n);
    for r in &records {
        let b = &r.body;
        payloads.push(Payload {
            actor_kind: b.actor.kind.number(),
            actor_id: redactor.text(&b.actor.subject_id).text,
            actor_team_id: String::new(),
            actor_roles: b.actor.roles.clone(),
            action: b.action.clone(),
            resource: redactor.text(&b.resource).text,
            outcome: b.outcome.number(),
            trace_id: b.trace_id.clone(),
            client_ip: redactor.client_ip(&b.client_ip).text,
            details: redactor.details(&b.details_json).text,
            redacted: false,
        });
    }
    let redact = started.elapsed();
    let started = Instant::now();
    let mut prev = [0u8; 32];
    for (i, p) in payloads.iter().enumerate() {
        let digest = p.digest();
        prev = record_hash(&prev, i as u64 + 1, "aud_x", 0, "team_x", &digest);
    }
    let hash = started.elapsed();
    println!(
        "cpu, one core: redaction {:.0} records/s, digest + chain hash {:.0} records/s (head {})",
        n as f64 / redact.as_secs_f64(),
        n as f64 / hash.as_secs_f64(),
        &prev.iter().map(|b| format!("{b:02x}")).collect::<String>()[..8]
    );
}
