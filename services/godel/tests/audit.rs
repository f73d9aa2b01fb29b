//! `godel audit verify` as a reviewer runs it: the real binary, against the audit
//! service of a running `godel up`, and offline on its data directory or on a
//! PostgreSQL audit database; tampering gives a non-zero exit naming the record.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use godel_audit::{
    Actor, ActorKind, AuditConfig, AuditLog, CheckpointConfig, Migrator, NewRecord, Outcome,
    RecordBody, RedactionConfig,
};
use godel_identity::BearerInterceptor;
use godel_proto::audit::v1::audit_service_client::AuditServiceClient;
use godel_proto::audit::v1::{AppendRequest, AuditFilter, AuditRecord, QueryRequest};
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::auth::v1::{AuthenticateRequest, authenticate_request::Credential};
use godel_proto::common::v1::{Caller, PageRequest, SubjectKind};
use godel_store::DatabaseConfig;
use godel_store::sea_orm::ConnectionTrait;
use godel_test_utils::postgres::TestDb;
use godel_types::AuditRecordId;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Runs `godel audit verify <args>` to completion.
async fn verify(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_godel"))
        .args(["audit", "verify"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        status.code().unwrap(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A running `godel up` on free ports.
struct Up {
    child: Child,
    /// The audit service's gRPC URL.
    audit: String,
    /// The auth service's gRPC URL.
    auth: String,
    /// The org-admin API key printed on first start.
    api_key: String,
}

/// Starts `godel up` on free ports on a new data directory.
async fn start_up(data_dir: &Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_godel"))
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
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut audit, mut auth, mut api_key) = (None, None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["audit", _, "grpc", grpc] => audit = Some(format!("http://{grpc}")),
                ["auth", _, "grpc", grpc] => auth = Some(format!("http://{grpc}")),
                [key] if key.starts_with("gdl_") => api_key = Some((*key).to_owned()),
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
        child,
        audit: audit.expect("the banner lists the audit service"),
        auth: auth.expect("the banner lists the auth service"),
        api_key: api_key.expect("the first start prints the org-admin API key"),
    }
}

/// An access token for the org-admin API key, from auth.
async fn access_token(up: &Up) -> String {
    let mut auth = AuthServiceClient::connect(up.auth.clone()).await.unwrap();
    auth.authenticate(AuthenticateRequest {
        credential: Some(Credential::ApiKey(up.api_key.clone())),
        team_id: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .access_token
}

fn proto_record(i: usize) -> AuditRecord {
    AuditRecord {
        id: AuditRecordId::new().to_string(),
        actor: Some(Caller {
            subject_kind: SubjectKind::User as i32,
            subject_id: format!("usr_{:032x}", i % 3),
            team_id: String::new(),
            roles: vec!["admin".to_owned()],
        }),
        action: "task.submit".to_owned(),
        resource: format!("/v1/tasks/audit-cli-{i}"),
        outcome: 1,
        details_json: format!(r#"{{"n":{i}}}"#),
        ..AuditRecord::default()
    }
}

async fn exec(db: &godel_store::Db, sql: &str) {
    db.conn()
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_checks_a_running_godel_up_and_its_data_dir_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut up = start_up(&data_dir).await;
    let audit_url = up.audit.clone();
    let channel = tonic::transport::Endpoint::from_shared(audit_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = access_token(&up).await;
    let mut client =
        AuditServiceClient::with_interceptor(channel, BearerInterceptor::new(&token).unwrap());
    // Without a credential the CLI says what it needs; with one, API key or token,
    // it verifies.
    let (code, _, err) = verify(&["--server", &audit_url]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--token"), "{err}");
    let online = |credential: &str| {
        [
            "--server".to_owned(),
            audit_url.clone(),
            "--token".to_owned(),
            credential.to_owned(),
            "--auth-server".to_owned(),
            up.auth.clone(),
        ]
    };
    let records: Vec<_> = (0..20).map(proto_record).collect();
    client
        .append(AppendRequest {
            records: records.clone(),
        })
        .await
        .unwrap();
    // Other services' events may be recorded too: find our records' positions.
    let sequence_of = |i: usize| {
        let mut client = client.clone();
        async move {
            client
                .query(QueryRequest {
                    filter: Some(AuditFilter {
                        resource: format!("/v1/tasks/audit-cli-{i}"),
                        ..AuditFilter::default()
                    }),
                    page: Some(PageRequest::default()),
                })
                .await
                .unwrap()
                .into_inner()
                .records[0]
                .sequence
        }
    };
    let (seq_a, seq_b) = (sequence_of(5).await, sequence_of(12).await);

    let args = online(&up.api_key);
    let (code, out, err) = verify(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("audit log intact\n"), "{out}");
    let checked: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("records checked: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(checked >= 20, "{out}");

    // Someone with access to the database file changes record B's payload.
    let tamper = godel_store::connect(&DatabaseConfig {
        url: format!("sqlite://{}?mode=rw", data_dir.join("audit.db").display()).into(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    exec(
        &tamper,
        &format!("UPDATE audit_payload SET action = 'task.cancel' WHERE sequence = {seq_b}"),
    )
    .await;
    let args = online(&token);
    let (code, out, _) = verify(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines().next().unwrap(),
        format!("audit log DAMAGED at record {seq_b}: modified"),
        "{out}"
    );

    kill(
        Pid::from_raw(i32::try_from(up.child.id().unwrap()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), up.child.wait())
        .await
        .unwrap()
        .unwrap();

    // Offline, from the data directory: the same finding.
    let (code, out, err) = verify(&["--data-dir", path(&data_dir)]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out.lines().next().unwrap(),
        format!("audit log DAMAGED at record {seq_b}: modified"),
        "{out}"
    );
    assert!(
        out.contains(&format!("records checked: {}\n", seq_b - 1)),
        "{out}"
    );
    // An `erased` mark forged on an earlier record is found first.
    exec(
        &tamper,
        &format!("UPDATE audit_payload SET erased = TRUE WHERE sequence = {seq_a}"),
    )
    .await;
    tamper.close().await.unwrap();
    let (code, out, err) = verify(&["--data-dir", path(&data_dir)]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out.lines().next().unwrap(),
        format!("audit log DAMAGED at record {seq_a}: unrecorded_erasure"),
        "{out}"
    );
    // Checking only the records before it finds nothing.
    let to = (seq_a - 1).to_string();
    let (code, out, err) = verify(&["--data-dir", path(&data_dir), "--to", &to]).await;
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_offline_on_postgres_names_the_tampered_record() {
    let test_db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        database: DatabaseConfig {
            url: test_db.url.clone().into(),
            schema: test_db.schema.clone(),
            max_connections: 2,
            ..DatabaseConfig::default()
        },
        checkpoint: CheckpointConfig {
            dir: dir.path().join("checkpoints"),
            signing_key_file: dir.path().join("signing.key"),
            every_records: 5,
            interval: Duration::from_secs(3600),
        },
        redaction: RedactionConfig {
            key_file: dir.path().join("pseudonym.key"),
            ..RedactionConfig::default()
        },
        ..AuditConfig::default()
    };
    let db = godel_store::connect(&config.database).await.unwrap();
    godel_store::migrate::<Migrator>(&db).await.unwrap();
    let log = Arc::new(AuditLog::open(db.clone(), &config).unwrap());
    let records: Vec<_> = (0..12)
        .map(|i| NewRecord {
            id: AuditRecordId::new(),
            occurred_at: chrono::Utc::now(),
            team_id: None,
            body: RecordBody {
                actor: Actor {
                    kind: ActorKind::User,
                    subject_id: format!("usr_{i:032x}"),
                    team_id: None,
                    roles: Vec::new(),
                },
                action: "task.submit".to_owned(),
                outcome: Outcome::Success,
                ..RecordBody::default()
            },
        })
        .collect();
    log.append(records).await.unwrap();

    let schema = test_db.schema.clone().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let public_key = dir.path().join("signing.key.pub");
    let args = [
        "--database-url",
        &test_db.url,
        "--schema",
        &schema,
        "--checkpoint-dir",
        path(&checkpoints),
        "--public-key",
        path(&public_key),
    ];
    let (code, out, err) = verify(&args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "audit log intact\nrecords checked: 12\nerased payloads: 0\ncheckpoints checked: 1\n"
    );

    // Checkpoints checked with another key do not vouch for anything (the one
    // checkpoint is at 12, written after the batch).
    let other = godel_audit::Checkpointer::open(&CheckpointConfig {
        dir: dir.path().join("other-checkpoints"),
        signing_key_file: dir.path().join("other.key"),
        ..config.checkpoint.clone()
    })
    .unwrap();
    drop(other);
    let other_key = dir.path().join("other.key.pub");
    let mut wrong = args;
    wrong[7] = path(&other_key);
    let (code, out, _) = verify(&wrong).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines().next().unwrap(),
        "audit log DAMAGED at record 12: checkpoint_mismatch",
        "{out}"
    );

    // A payload deleted outside any retention run, then a chain entry deleted with
    // the append-only trigger off.
    exec(&db, "DELETE FROM audit_payload WHERE sequence = 4").await;
    let (code, out, _) = verify(&args).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines().next().unwrap(),
        "audit log DAMAGED at record 4: unrecorded_erasure",
        "{out}"
    );
    exec(&db, "ALTER TABLE audit_chain DISABLE TRIGGER USER").await;
    exec(&db, "DELETE FROM audit_chain WHERE sequence = 7").await;
    let (code, out, _) = verify(&[&args[..], &["--from", "5"][..]].concat()).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines().next().unwrap(),
        "audit log DAMAGED at record 7: deleted",
        "{out}"
    );
    drop(log);
    db.close().await.unwrap();
    test_db.cleanup().await;
}

#[tokio::test]
async fn audit_verify_without_a_reachable_service_exits_2() {
    let (code, out, err) = verify(&["--server", "http://127.0.0.1:1", "--token", "t"]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("cannot reach the audit service"), "{err}");
    let (code, _, err) = verify(&["--checkpoint-dir", "/nonexistent"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("offline"), "{err}");
}
