//! The audit log end to end: every case runs on SQLite and on PostgreSQL (a fresh
//! schema on the test server). Tampering is done directly in the database, the way
//! an attacker with database (and on PostgreSQL, DDL) rights would.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use godel_audit::canonical::{Payload, parse_hash, record_hash};
use godel_audit::{
    Actor, ActorKind, AuditConfig, AuditLog, CheckpointConfig, DamageKind, Dependencies, Filter,
    Migrator, NewRecord, Outcome, PolicySource, RecordBody, RedactionConfig, Requester,
    RetentionConfig, RetentionOutcome, TeamRetention,
};
use godel_bus::{BusConfig, MemoryBus, OutgoingMessage, Subject};
use godel_identity::{BearerInterceptor, OrgRole, Permission, PermissionSet};
use godel_proto::audit::v1::audit_service_client::AuditServiceClient;
use godel_proto::audit::v1::{
    AppendRequest, ApplyRetentionRequest, AuditFilter, AuditRecord, Damage, EraseSubjectRequest,
    ExportRequest, GetRetentionRequest, Outcome as ProtoOutcome, QueryRequest, RetentionSource,
    SetTeamRetentionRequest, VerifyRequest,
};
use godel_proto::cloudevent;
use godel_proto::common::v1::{Caller, PageRequest, SubjectKind};
use godel_proto::pbjson_types::Timestamp;
use godel_runtime::ServerConfig;
use godel_store::sea_orm::{ConnectionTrait, DbBackend, Statement};
use godel_store::{DatabaseConfig, Db};
use godel_test_utils::eventually;
use godel_test_utils::identity::TestIssuer;
use godel_test_utils::nats::TestNats;
use godel_test_utils::postgres::{DbKind as Kind, TestDb};
use godel_types::{AuditRecordId, EventId, TeamId, UserId};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// An `AuditService` client sending one caller's access token.
type Client = AuditServiceClient<InterceptedService<Channel, BearerInterceptor>>;

async fn client(running: &godel_runtime::RunningService, token: &str) -> Client {
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AuditServiceClient::with_interceptor(channel, BearerInterceptor::new(token).unwrap())
}

/// A migrated database, key files and a checkpoint directory for one test.
struct Harness {
    log: Arc<AuditLog>,
    db: Db,
    config: AuditConfig,
    test_db: TestDb,
    _dir: tempfile::TempDir,
}

const T0: i64 = 1_700_000_000;

impl Harness {
    async fn new(kind: Kind) -> Self {
        Self::with_checkpoints_every(kind, 0).await
    }

    async fn with_checkpoints_every(kind: Kind, every_records: u64) -> Self {
        Self::with_config(kind, |c| c.checkpoint.every_records = every_records).await
    }

    async fn with_config(kind: Kind, change: impl FnOnce(&mut AuditConfig)) -> Self {
        let test_db = TestDb::of(kind).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(&test_db, dir.path().to_owned(), 0);
        change(&mut config);
        let db = godel_store::connect(&config.database).await.unwrap();
        godel_store::migrate::<Migrator>(&db).await.unwrap();
        let log = Arc::new(AuditLog::open(db.clone(), &config).unwrap());
        Self {
            log,
            db,
            config,
            test_db,
            _dir: dir,
        }
    }

    fn is_postgres(&self) -> bool {
        self.test_db.is_postgres()
    }

    async fn finish(self) {
        drop(self.log);
        self.db.close().await.unwrap();
        self.test_db.cleanup().await;
    }

    async fn exec(&self, sql: &str) {
        self.db
            .conn()
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// What an attacker with DDL rights does first on PostgreSQL.
    async fn disable_trigger(&self) {
        if self.is_postgres() {
            self.exec("ALTER TABLE audit_chain DISABLE TRIGGER USER")
                .await;
        }
    }

    /// Appends `n` plain records one batch at a time of `batch`.
    async fn fill(&self, n: usize, batch: usize) -> Vec<NewRecord> {
        let records: Vec<_> = (0..n).map(|i| record(i, None)).collect();
        for chunk in records.chunks(batch) {
            let outcome = self.log.append(chunk.to_vec()).await.unwrap();
            assert_eq!(outcome.appended as usize, chunk.len());
        }
        records
    }

    async fn texts(&self, sql: &str) -> Vec<String> {
        let rows = self
            .db
            .conn()
            .query_all_raw(Statement::from_string(self.backend(), sql))
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<String>("", "t").unwrap())
            .collect()
    }

    async fn int(&self, sql: &str) -> i64 {
        let row = self
            .db
            .conn()
            .query_one_raw(Statement::from_string(self.backend(), sql))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    }

    fn backend(&self) -> DbBackend {
        self.db.conn().get_database_backend()
    }

    async fn expect_damage(&self, sequence: u64, kind: DamageKind, proto: Damage) {
        let report = self.log.verify(0, 0).await.unwrap();
        let damage = report
            .damage
            .clone()
            .unwrap_or_else(|| panic!("verify found nothing: {report:?}"));
        assert_eq!(
            (damage.sequence, damage.kind),
            (sequence, kind),
            "{damage:?}"
        );
        assert_eq!(damage.kind.to_proto(), proto);
        assert_eq!(report.records_checked, sequence - 1, "{report:?}");
    }
}

fn config(test_db: &TestDb, dir: PathBuf, every_records: u64) -> AuditConfig {
    AuditConfig {
        server: ServerConfig::local(),
        database: DatabaseConfig {
            url: test_db.url.clone().into(),
            schema: test_db.schema.clone(),
            ..DatabaseConfig::default()
        },
        bus: BusConfig::default(),
        checkpoint: CheckpointConfig {
            dir: dir.join("checkpoints"),
            signing_key_file: dir.join("signing.key"),
            every_records,
            interval: Duration::from_secs(3600),
        },
        redaction: RedactionConfig {
            key_file: dir.join("pseudonym.key"),
            ..RedactionConfig::default()
        },
        ..AuditConfig::default()
    }
}

fn record(i: usize, team: Option<TeamId>) -> NewRecord {
    NewRecord {
        id: AuditRecordId::new(),
        occurred_at: DateTime::from_timestamp(T0 + i as i64, 123_456_789).unwrap(),
        team_id: team,
        body: RecordBody {
            actor: Actor {
                kind: ActorKind::User,
                subject_id: format!("usr_{:032x}", i % 3),
                team_id: None,
                roles: vec!["admin".to_owned()],
            },
            action: if i.is_multiple_of(2) {
                "task.submit"
            } else {
                "api_key.revoke"
            }
            .to_owned(),
            resource: format!("/v1/tasks/{i}"),
            outcome: if i.is_multiple_of(5) {
                Outcome::Denied
            } else {
                Outcome::Success
            },
            trace_id: format!("{:032x}", i + 1),
            client_ip: "203.0.113.7".to_owned(),
            details_json: format!(r#"{{"status":200,"n":{i}}}"#),
        },
    }
}

/// The proto form of `record`, for the gRPC API.
fn proto(r: &NewRecord) -> AuditRecord {
    AuditRecord {
        id: r.id.to_string(),
        occurred_at: Some(Timestamp::from(r.occurred_at)),
        team_id: r.team_id.map(|t| t.to_string()).unwrap_or_default(),
        actor: Some(Caller {
            subject_kind: SubjectKind::User as i32,
            subject_id: r.body.actor.subject_id.clone(),
            team_id: String::new(),
            roles: r.body.actor.roles.clone(),
        }),
        action: r.body.action.clone(),
        resource: r.body.resource.clone(),
        outcome: match r.body.outcome {
            Outcome::Denied => ProtoOutcome::Denied,
            _ => ProtoOutcome::Success,
        } as i32,
        trace_id: r.body.trace_id.clone(),
        client_ip: r.body.client_ip.clone(),
        details_json: r.body.details_json.clone(),
        ..AuditRecord::default()
    }
}

async fn appends_are_idempotent_by_record_id(kind: Kind) {
    let h = Harness::new(kind).await;
    let records = h.fill(5, 5).await;
    let mut again = records.clone();
    again.push(record(5, None));
    again.push(record(6, None));
    let repeated = again[6].clone();
    again.push(repeated); // repeated within the batch
    let outcome = h.log.append(again).await.unwrap();
    assert_eq!(
        (outcome.appended, outcome.duplicates, outcome.head),
        (2, 6, 7)
    );
    assert_eq!(h.int("SELECT count(*) AS n FROM audit_chain").await, 7);
    assert_eq!(h.int("SELECT count(*) AS n FROM audit_payload").await, 7);
    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records_checked, 7);
    h.finish().await;
}

async fn concurrent_appenders_build_a_gap_free_chain(kind: Kind) {
    let h = Harness::with_checkpoints_every(kind, 25).await;
    // A second pool on the same database: another replica of the service.
    let replica_db = godel_store::connect(&h.config.database).await.unwrap();
    let replica = Arc::new(AuditLog::open(replica_db.clone(), &h.config).unwrap());
    let mut tasks = Vec::new();
    for w in 0..6 {
        let log = if w % 2 == 0 {
            h.log.clone()
        } else {
            replica.clone()
        };
        tasks.push(tokio::spawn(async move {
            for b in 0..8 {
                let batch: Vec<_> = (0..5).map(|i| record(w * 100 + b * 10 + i, None)).collect();
                log.append(batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(h.int("SELECT count(*) AS n FROM audit_chain").await, 240);
    assert_eq!(h.int("SELECT min(sequence) AS n FROM audit_chain").await, 1);
    assert_eq!(
        h.int("SELECT max(sequence) AS n FROM audit_chain").await,
        240
    );
    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records_checked, 240);
    assert!(report.checkpoints_matched >= 1, "{report:?}");
    drop(replica);
    replica_db.close().await.unwrap();
    h.finish().await;
}

async fn a_modified_payload_is_detected(kind: Kind) {
    let h = Harness::new(kind).await;
    h.fill(10, 3).await;
    h.exec("UPDATE audit_payload SET action = 'task.cancel' WHERE sequence = 4")
        .await;
    h.expect_damage(4, DamageKind::Modified, Damage::HashMismatch)
        .await;
    h.finish().await;
}

async fn a_modified_chain_entry_is_detected(kind: Kind) {
    let h = Harness::new(kind).await;
    h.fill(10, 10).await;
    h.disable_trigger().await;
    h.exec("UPDATE audit_chain SET occurred_at = occurred_at + 1 WHERE sequence = 7")
        .await;
    h.expect_damage(7, DamageKind::Modified, Damage::HashMismatch)
        .await;
    h.finish().await;
}

async fn a_deleted_record_is_detected(kind: Kind) {
    let h = Harness::new(kind).await;
    h.fill(10, 4).await;
    h.disable_trigger().await;
    h.exec("DELETE FROM audit_payload WHERE sequence = 5").await;
    h.exec("DELETE FROM audit_chain WHERE sequence = 5").await;
    h.expect_damage(5, DamageKind::Deleted, Damage::MissingRecord)
        .await;
    h.finish().await;
}

async fn swapped_records_are_detected(kind: Kind) {
    let h = Harness::new(kind).await;
    h.fill(10, 10).await;
    h.disable_trigger().await;
    for table in ["audit_chain", "audit_payload"] {
        h.exec(&format!(
            "UPDATE {table} SET sequence = 1000 WHERE sequence = 3"
        ))
        .await;
        h.exec(&format!(
            "UPDATE {table} SET sequence = 3 WHERE sequence = 4"
        ))
        .await;
        h.exec(&format!(
            "UPDATE {table} SET sequence = 4 WHERE sequence = 1000"
        ))
        .await;
    }
    h.expect_damage(3, DamageKind::Reordered, Damage::BrokenLink)
        .await;
    h.finish().await;
}

async fn an_inserted_record_is_detected(kind: Kind) {
    let h = Harness::new(kind).await;
    h.fill(10, 10).await;
    h.disable_trigger().await;
    // Make room at 6, then forge a well-formed record there, chained to record 5.
    for table in ["audit_chain", "audit_payload"] {
        h.exec(&format!(
            "UPDATE {table} SET sequence = sequence + 1000 WHERE sequence >= 6"
        ))
        .await;
        h.exec(&format!(
            "UPDATE {table} SET sequence = sequence - 999 WHERE sequence >= 1000"
        ))
        .await;
    }
    let prev = h
        .texts("SELECT hash AS t FROM audit_chain WHERE sequence = 5")
        .await;
    let prev = parse_hash(&prev[0]).unwrap();
    let payload = Payload {
        action: "team.delete".into(),
        ..Payload::default()
    };
    let digest = payload.digest();
    let id = AuditRecordId::new().to_string();
    let hash = record_hash(&prev, 6, &id, T0 * 1_000_000_000, "", &digest);
    h.exec(&format!(
        "INSERT INTO audit_chain (sequence, record_id, occurred_at, team_id, payload_digest, prev_hash, hash) \
         VALUES (6, '{id}', {}, '', '{}', '{}', '{}')",
        T0 * 1_000_000_000,
        hex::encode(digest),
        hex::encode(prev),
        hex::encode(hash)
    ))
    .await;
    // With its payload: a missing one would be reported on its own.
    h.exec(
        "INSERT INTO audit_payload (sequence, actor_kind, actor_id, actor_team_id, actor_roles, \
         action, resource, outcome, trace_id, client_ip, details, redacted) \
         VALUES (6, 0, '', '', '[]', 'team.delete', '', 0, '', '', '', FALSE)",
    )
    .await;
    h.expect_damage(6, DamageKind::Inserted, Damage::BrokenLink)
        .await;
    h.finish().await;
}

async fn truncation_before_the_last_checkpoint_is_detected(kind: Kind) {
    let h = Harness::with_checkpoints_every(kind, 5).await;
    h.fill(10, 10).await; // checkpoint at 10
    h.fill(2, 1).await; // 11, 12: not yet checkpointed
    assert!(
        h.config
            .checkpoint
            .dir
            .join(format!("checkpoint-{:020}.json", 10))
            .exists()
    );
    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.checkpoints_matched, 1);

    h.disable_trigger().await;
    h.exec("DELETE FROM audit_payload WHERE sequence >= 8")
        .await;
    h.exec("DELETE FROM audit_chain WHERE sequence >= 8").await;
    h.expect_damage(8, DamageKind::Truncated, Damage::CheckpointMismatch)
        .await;
    h.finish().await;
}

async fn a_consistently_rewritten_tail_disagrees_with_the_checkpoint(kind: Kind) {
    let h = Harness::with_checkpoints_every(kind, 4).await;
    h.fill(4, 4).await; // checkpoint at 4
    h.disable_trigger().await;
    // Rewrite record 3's payload and recompute the hashes of 3 and 4, as someone
    // who knows the encoding (but not the signing key) would.
    h.exec("UPDATE audit_payload SET action = 'team.delete' WHERE sequence = 3")
        .await;
    let mut prev = parse_hash(
        &h.texts("SELECT hash AS t FROM audit_chain WHERE sequence = 2")
            .await[0],
    )
    .unwrap();
    for seq in 3..=4u64 {
        let records = h
            .log
            .query(&godel_audit::Filter::default(), 10, None)
            .await
            .unwrap()
            .0;
        let r = records.iter().find(|r| r.sequence == seq).unwrap();
        let body = r.body.clone().unwrap();
        let payload = Payload {
            actor_kind: body.actor.kind.number(),
            actor_id: body.actor.subject_id,
            actor_team_id: String::new(),
            actor_roles: body.actor.roles,
            action: body.action,
            resource: body.resource,
            outcome: body.outcome.number(),
            trace_id: body.trace_id,
            client_ip: body.client_ip,
            details: body.details_json,
            redacted: false,
        };
        let digest = payload.digest();
        let ns = r.occurred_at.timestamp_nanos_opt().unwrap();
        let hash = record_hash(&prev, seq, &r.id.to_string(), ns, "", &digest);
        h.exec(&format!(
            "UPDATE audit_chain SET payload_digest = '{}', prev_hash = '{}', hash = '{}' WHERE sequence = {seq}",
            hex::encode(digest),
            hex::encode(prev),
            hex::encode(hash)
        ))
        .await;
        prev = hash;
    }
    h.expect_damage(
        4,
        DamageKind::CheckpointMismatch,
        Damage::CheckpointMismatch,
    )
    .await;
    h.finish().await;
}

async fn payloads_removed_without_a_recorded_run_are_detected(kind: Kind) {
    let h = Harness::new(kind).await;
    h.fill(6, 6).await;
    h.exec("DELETE FROM audit_payload WHERE sequence IN (2, 5)")
        .await;
    h.expect_damage(2, DamageKind::UnrecordedErasure, Damage::UnrecordedErasure)
        .await;
    // Checking only what follows finds the second one.
    let part = h.log.verify(3, 6).await.unwrap();
    let damage = part.damage.unwrap();
    assert_eq!(
        (damage.sequence, damage.kind),
        (5, DamageKind::UnrecordedErasure)
    );
    h.finish().await;
}

async fn a_forged_erased_flag_is_detected(kind: Kind) {
    let h = Harness::new(kind).await;
    let records = h.fill(10, 10).await;
    // A real erasure first (records 1, 4, 7 and 10), so the log holds an erasure
    // record to hide behind.
    let subject = records[0].body.actor.subject_id.clone();
    let erased = h
        .log
        .erase_subject(&subject, &operator("ticket 1"))
        .await
        .unwrap();
    assert_eq!(erased.records_scrubbed, 4);
    assert!(h.log.verify(0, 0).await.unwrap().ok());

    // The flag alone, on an unchanged payload the erasure did not touch.
    h.exec("UPDATE audit_payload SET erased = TRUE WHERE sequence = 5")
        .await;
    h.expect_damage(5, DamageKind::UnrecordedErasure, Damage::UnrecordedErasure)
        .await;
    // The flag hiding a modified payload.
    h.exec("UPDATE audit_payload SET action = 'task.cancel', outcome = 2 WHERE sequence = 5")
        .await;
    h.expect_damage(5, DamageKind::UnrecordedErasure, Damage::UnrecordedErasure)
        .await;
    h.finish().await;
}

async fn a_scrubbed_payload_changed_afterwards_is_detected(kind: Kind) {
    let h = Harness::new(kind).await;
    let records = h.fill(9, 9).await;
    let subject = records[0].body.actor.subject_id.clone(); // records 1, 4 and 7
    let outcome = h
        .log
        .erase_subject(&subject, &operator("ticket 2"))
        .await
        .unwrap();
    assert_eq!(outcome.records_scrubbed, 3);
    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records_checked, report.erased_payloads), (10, 3));
    h.exec("UPDATE audit_payload SET action = 'task.cancel' WHERE sequence = 4")
        .await;
    h.expect_damage(4, DamageKind::UnrecordedErasure, Damage::UnrecordedErasure)
        .await;
    h.finish().await;
}

async fn a_forged_retention_record_accounts_for_nothing(kind: Kind) {
    let h = Harness::new(kind).await;
    h.fill(6, 6).await;
    h.exec("DELETE FROM audit_payload WHERE sequence = 3").await;
    // A well-chained `audit.retention` record appended at the tail in the database,
    // claiming everything without a team expired: it has no valid signature.
    let head = parse_hash(
        &h.texts("SELECT hash AS t FROM audit_chain WHERE sequence = 6")
            .await[0],
    )
    .unwrap();
    let details = format!(
        r#"{{"reason":"","payloads_removed":1,"rules":[{{"team":"default","before_ns":{},"removed":1}}],"signature":"{}"}}"#,
        i64::MAX,
        "00".repeat(64)
    );
    let payload = Payload {
        actor_kind: 3,
        actor_id: "audit".into(),
        action: "audit.retention".into(),
        outcome: 1,
        details: details.clone(),
        ..Payload::default()
    };
    let digest = payload.digest();
    let id = AuditRecordId::new().to_string();
    let ns = (T0 + 100) * 1_000_000_000;
    let hash = record_hash(&head, 7, &id, ns, "", &digest);
    h.exec(&format!(
        "INSERT INTO audit_chain (sequence, record_id, occurred_at, team_id, payload_digest, prev_hash, hash) \
         VALUES (7, '{id}', {ns}, '', '{}', '{}', '{}')",
        hex::encode(digest),
        hex::encode(head),
        hex::encode(hash)
    ))
    .await;
    h.exec(&format!(
        "INSERT INTO audit_payload (sequence, actor_kind, actor_id, actor_team_id, actor_roles, \
         action, resource, outcome, trace_id, client_ip, details, redacted) \
         VALUES (7, 3, 'audit', '', '[]', 'audit.retention', '', 1, '', '', '{details}', FALSE)"
    ))
    .await;
    // The forged record itself is well-formed: only its signature gives it away.
    let tail = h.log.verify(4, 7).await.unwrap();
    assert!(tail.ok(), "{tail:?}");
    assert_eq!(tail.records_checked, 4);
    h.expect_damage(3, DamageKind::UnrecordedErasure, Damage::UnrecordedErasure)
        .await;
    h.finish().await;
}

/// A person asking for a retention run or an erasure.
fn operator(reason: &str) -> Requester {
    Requester {
        actor: Actor {
            kind: ActorKind::User,
            subject_id: format!("usr_{:032x}", 0x0_9e7a),
            team_id: None,
            roles: vec!["org_admin".to_owned()],
        },
        reason: reason.to_owned(),
    }
}

const EMAIL: &str = "ada.lovelace@example.com";
const OTHER_EMAIL: &str = "grace.hopper@example.org";
const CARD: &str = "4111 1111 1111 1111";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c3JfY2FuYXJ5In0.Zm9yZ2VkLXNpZ25hdHVyZQ";
const BEARER: &str = "opaque.canary-token_123";
const KEYS: &[&str] = &[
    "sk-ant-api03-CanaryKey0123456789",
    "ghp_CanaryToken0123456789abcdefXYZ",
    "AKIAIOSFODNN7CANARY1",
];

async fn planted_secrets_never_reach_the_tables(kind: Kind) {
    let h = Harness::new(kind).await;
    let mut a = record(1, None);
    a.body.resource = format!("/v1/users/{EMAIL}");
    a.body.details_json = serde_json::json!({
        "card": CARD,
        "header": format!("Authorization: Bearer {JWT}"),
        "upstream": format!("Bearer {BEARER}"),
        "keys": KEYS,
        "note": format!("contact {EMAIL}"),
    })
    .to_string();
    let mut b = record(2, None);
    b.body.resource = format!("/v1/users/{EMAIL}");
    let mut c = record(3, None);
    c.body.resource = format!("/v1/users/{OTHER_EMAIL}");
    let outcome = h.log.append(vec![a, b, c]).await.unwrap();
    assert_eq!(outcome.appended, 3);

    let raw = h
        .texts(
            "SELECT actor_id || '|' || action || '|' || resource || '|' || trace_id || '|' || \
             client_ip || '|' || details || '|' || actor_roles AS t FROM audit_payload ORDER BY sequence",
        )
        .await;
    let chain = h
        .texts("SELECT record_id || team_id || payload_digest || hash AS t FROM audit_chain")
        .await;
    let all = format!("{raw:?}{chain:?}");
    for canary in [
        EMAIL,
        OTHER_EMAIL,
        CARD,
        "4111111111111111",
        JWT,
        "eyJhbGci",
        BEARER,
    ]
    .iter()
    .chain(KEYS)
    {
        assert!(!all.contains(canary), "{canary} leaked into {all}");
    }
    let pseudonym = h.log.redactor().pseudonym(EMAIL);
    let placeholder = format!("[email:{pseudonym}]");
    assert!(raw[0].contains(&placeholder), "{}", raw[0]);
    assert!(raw[1].contains(&placeholder), "{}", raw[1]);
    assert!(raw[0].matches(&placeholder).count() == 2, "{}", raw[0]);
    assert!(!raw[2].contains(&placeholder), "{}", raw[2]);
    let other = format!("[email:{}]", h.log.redactor().pseudonym(OTHER_EMAIL));
    assert!(raw[2].contains(&other), "{}", raw[2]);
    assert_ne!(placeholder, other);
    for kind in ["[card:", "[jwt:", "[bearer:", "[key:"] {
        assert!(raw[0].contains(kind), "{kind} missing: {}", raw[0]);
    }
    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    h.finish().await;
}

async fn a_forged_checkpoint_file_is_detected(kind: Kind) {
    let h = Harness::with_checkpoints_every(kind, 3).await;
    h.fill(3, 3).await; // checkpoint at 3
    h.fill(3, 3).await; // checkpoint at 6
    let path = h
        .config
        .checkpoint
        .dir
        .join(format!("checkpoint-{:020}.json", 3));
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // Claim a later time: the signature no longer covers the file.
    file["time_unix_nanos"] = serde_json::json!(1);
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    h.expect_damage(
        3,
        DamageKind::CheckpointMismatch,
        Damage::CheckpointMismatch,
    )
    .await;
    h.finish().await;
}

async fn verify_walks_many_pages(kind: Kind) {
    let h = Harness::new(kind).await;
    let records: Vec<_> = (0..2100).map(|i| record(i, None)).collect();
    for chunk in records.chunks(1000) {
        h.log.append(chunk.to_vec()).await.unwrap();
    }
    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records_checked, 2100);
    h.exec("UPDATE audit_payload SET outcome = 3 WHERE sequence = 1500")
        .await;
    h.expect_damage(1500, DamageKind::Modified, Damage::HashMismatch)
        .await;
    h.finish().await;
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Postgres).await;
                }
            )*
        }
    };
}

both!(
    appends_are_idempotent_by_record_id,
    concurrent_appenders_build_a_gap_free_chain,
    a_modified_payload_is_detected,
    a_modified_chain_entry_is_detected,
    a_deleted_record_is_detected,
    swapped_records_are_detected,
    an_inserted_record_is_detected,
    truncation_before_the_last_checkpoint_is_detected,
    a_consistently_rewritten_tail_disagrees_with_the_checkpoint,
    payloads_removed_without_a_recorded_run_are_detected,
    a_forged_erased_flag_is_detected,
    a_scrubbed_payload_changed_afterwards_is_detected,
    a_forged_retention_record_accounts_for_nothing,
    planted_secrets_never_reach_the_tables,
    a_forged_checkpoint_file_is_detected,
    verify_walks_many_pages,
    grpc_round_trip,
    retention_removes_exactly_the_expired_payloads,
    erasure_scrubs_the_subject_and_keeps_verify_green,
    retention_overrides_apply_after_restart_and_with_config,
    retention_and_erasure_over_grpc,
    callers_see_only_what_they_may,
);

#[tokio::test]
async fn postgres_rejects_update_delete_and_truncate_of_the_chain() {
    let h = Harness::new(Kind::Postgres).await;
    h.fill(3, 3).await;
    for sql in [
        "UPDATE audit_chain SET team_id = 'x' WHERE sequence = 2",
        "DELETE FROM audit_chain WHERE sequence = 3",
        "TRUNCATE audit_chain",
    ] {
        let err = h.db.conn().execute_unprepared(sql).await.unwrap_err();
        assert!(
            err.to_string().contains("audit_chain is append-only"),
            "{sql}: {err}"
        );
    }
    assert_eq!(h.int("SELECT count(*) AS n FROM audit_chain").await, 3);
    assert!(h.log.verify(0, 0).await.unwrap().ok());
    h.finish().await;
}

async fn grpc_round_trip(kind: Kind) {
    let test_db = TestDb::of(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&test_db, dir.path().to_owned(), 10);
    let deps = Dependencies::connect(&config.bus).await.unwrap();
    let shutdown = CancellationToken::new();
    let issuer = TestIssuer::new();
    let running =
        godel_audit::start_with_verifier(config, deps, issuer.verifier(), shutdown.clone())
            .await
            .unwrap();
    let mut writer = client(&running, &issuer.org(&[OrgRole::AuditWriter])).await;
    let mut client = client(&running, &issuer.org(&[OrgRole::Auditor])).await;

    let (team_a, team_b) = (TeamId::new(), TeamId::new());
    let records: Vec<_> = (0..25)
        .map(|i| {
            proto(&record(
                i,
                Some(if i.is_multiple_of(2) { team_a } else { team_b }),
            ))
        })
        .collect();
    let appended = writer
        .append(AppendRequest {
            records: records.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((appended.appended, appended.duplicates), (25, 0));
    let again = writer
        .append(AppendRequest {
            records: records[..3].to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.appended, again.duplicates), (0, 3));
    let mut bad = records[0].clone();
    bad.id = "tsk_not-an-audit-id".into();
    let err = writer
        .append(AppendRequest { records: vec![bad] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("records[0].id"), "{err:?}");

    // Team A, newest first, 5 a page.
    let filter = AuditFilter {
        team_id: team_a.to_string(),
        ..AuditFilter::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .query(QueryRequest {
                filter: Some(filter.clone()),
                page: Some(PageRequest {
                    page_size: 5,
                    page_token: token.clone(),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.records);
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = records
        .iter()
        .step_by(2)
        .rev()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(
        seen.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(seen.windows(2).all(|w| w[0].sequence > w[1].sequence));
    assert_eq!(seen[0].occurred_at, records[24].occurred_at);
    assert_eq!(seen[0].action, records[24].action);

    // Other filters.
    let count = |f: AuditFilter| {
        let mut client = client.clone();
        async move {
            client
                .query(QueryRequest {
                    filter: Some(f),
                    page: Some(PageRequest {
                        page_size: 100,
                        page_token: String::new(),
                    }),
                })
                .await
                .unwrap()
                .into_inner()
                .records
                .len()
        }
    };
    let by = |f: fn(&mut AuditFilter)| {
        let mut filter = AuditFilter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(count(by(|f| f.action = "task.".into())).await, 13);
    assert_eq!(count(by(|f| f.action = "api_key.revoke".into())).await, 12);
    assert_eq!(count(by(|f| f.action = "api_".into())).await, 0);
    assert_eq!(
        count(by(|f| f.outcome = ProtoOutcome::Denied as i32)).await,
        5
    );
    assert_eq!(
        count(by(|f| f.actor_id = format!("usr_{:032x}", 1))).await,
        8
    );
    assert_eq!(count(by(|f| f.trace_id = format!("{:032x}", 8))).await, 1);
    assert_eq!(count(by(|f| f.resource = "/v1/tasks/3".into())).await, 1);
    assert_eq!(
        count(by(|f| {
            f.since = Some(Timestamp {
                seconds: T0 + 10,
                nanos: 0,
            });
            f.until = Some(Timestamp {
                seconds: T0 + 20,
                nanos: 0,
            });
        }))
        .await,
        10
    );
    let bad = client
        .query(QueryRequest {
            filter: None,
            page: Some(PageRequest {
                page_size: 1,
                page_token: "not-a-token!".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let verify = client
        .verify(VerifyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verify.ok, "{verify:?}");
    assert_eq!(verify.records_checked, 25);

    let mut stream = client
        .export(ExportRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        exported.push(r);
    }
    assert_eq!(
        exported.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        records.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        exported.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        (1..=25).collect::<Vec<u64>>()
    );
    assert!(exported.windows(2).all(|w| w[1].prev_hash == w[0].hash));

    // Two more records: fewer than `every_records`, so only the checkpoint written at
    // shutdown covers them.
    let more = writer
        .append(AppendRequest {
            records: vec![proto(&record(25, None)), proto(&record(26, None))],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(more.appended, 2);
    let checkpoints = dir.path().join("checkpoints");
    assert!(
        checkpoints
            .join(format!("checkpoint-{:020}.json", 25))
            .exists()
    );
    assert!(
        !checkpoints
            .join(format!("checkpoint-{:020}.json", 27))
            .exists()
    );
    shutdown.cancel();
    running.wait().await.unwrap();
    assert!(
        checkpoints
            .join(format!("checkpoint-{:020}.json", 27))
            .exists()
    );
    test_db.cleanup().await;
}

/// Team scoping by the caller's token: a team auditor reads only its team, an
/// org auditor every team, and only the audit writer appends.
async fn callers_see_only_what_they_may(kind: Kind) {
    let test_db = TestDb::of(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&test_db, dir.path().to_owned(), 0);
    let deps = Dependencies::connect(&config.bus).await.unwrap();
    let shutdown = CancellationToken::new();
    let issuer = TestIssuer::new();
    let running =
        godel_audit::start_with_verifier(config, deps, issuer.verifier(), shutdown.clone())
            .await
            .unwrap();
    let (team_a, team_b) = (TeamId::new(), TeamId::new());
    let records: Vec<_> = (0..9)
        .map(|i| {
            let team = match i % 3 {
                0 => Some(team_a),
                1 => Some(team_b),
                _ => None,
            };
            proto(&record(i, team))
        })
        .collect();
    let mut writer = client(&running, &issuer.org(&[OrgRole::AuditWriter])).await;
    writer
        .append(AppendRequest {
            records: records.clone(),
        })
        .await
        .unwrap();

    let ids = |team: Option<TeamId>| -> Vec<String> {
        let mut ids: Vec<String> = records
            .iter()
            .filter(|r| team.is_none_or(|t| r.team_id == t.to_string()))
            .map(|r| r.id.clone())
            .collect();
        ids.reverse(); // newest first
        ids
    };
    async fn query(
        client: &mut Client,
        team: Option<TeamId>,
    ) -> Result<Vec<String>, tonic::Status> {
        let filter = AuditFilter {
            team_id: team.map(|t| t.to_string()).unwrap_or_default(),
            ..AuditFilter::default()
        };
        let page = client
            .query(QueryRequest {
                filter: Some(filter),
                page: Some(PageRequest {
                    page_size: 100,
                    page_token: String::new(),
                }),
            })
            .await?;
        Ok(page
            .into_inner()
            .records
            .into_iter()
            .map(|r| r.id)
            .collect())
    }
    async fn export(
        client: &mut Client,
        team: Option<TeamId>,
    ) -> Result<Vec<String>, tonic::Status> {
        let filter = AuditFilter {
            team_id: team.map(|t| t.to_string()).unwrap_or_default(),
            ..AuditFilter::default()
        };
        let mut stream = client
            .export(ExportRequest {
                filter: Some(filter),
            })
            .await?
            .into_inner();
        let mut ids = Vec::new();
        while let Some(r) = stream.message().await? {
            ids.push(r.id);
        }
        Ok(ids)
    }
    let denied = |r: Result<Vec<String>, tonic::Status>| match r {
        Err(status) => status.code(),
        Ok(ids) => panic!("expected a refusal, got {} records", ids.len()),
    };

    // A team auditor of A: team A only, whether or not the filter names it.
    let mut auditor_a = client(&running, &issuer.member(team_a, &[Permission::AuditRead])).await;
    assert_eq!(
        query(&mut auditor_a, None).await.unwrap(),
        ids(Some(team_a))
    );
    assert_eq!(
        query(&mut auditor_a, Some(team_a)).await.unwrap(),
        ids(Some(team_a))
    );
    let mut oldest_first = ids(Some(team_a));
    oldest_first.reverse();
    assert_eq!(export(&mut auditor_a, None).await.unwrap(), oldest_first);
    assert_eq!(
        denied(query(&mut auditor_a, Some(team_b)).await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        denied(export(&mut auditor_a, Some(team_b)).await),
        tonic::Code::PermissionDenied
    );
    assert!(
        auditor_a
            .verify(VerifyRequest::default())
            .await
            .unwrap()
            .into_inner()
            .ok
    );
    // It reads; it does not write or erase.
    let err = auditor_a
        .append(AppendRequest {
            records: vec![proto(&record(20, Some(team_a)))],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = auditor_a
        .set_team_retention(SetTeamRetentionRequest {
            team_id: team_a.to_string(),
            period: None,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // A developer of A (no audit:read) reads nothing; neither does the writer.
    let mut developer = client(&running, &issuer.member(team_a, &[Permission::TasksCreate])).await;
    assert_eq!(
        denied(query(&mut developer, None).await),
        tonic::Code::PermissionDenied
    );
    let err = developer
        .verify(VerifyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert_eq!(
        denied(query(&mut writer, None).await),
        tonic::Code::PermissionDenied
    );

    // An org auditor: every team and the records outside any team.
    let mut org_auditor = client(&running, &issuer.org(&[OrgRole::Auditor])).await;
    assert_eq!(query(&mut org_auditor, None).await.unwrap(), ids(None));
    assert_eq!(
        query(&mut org_auditor, Some(team_b)).await.unwrap(),
        ids(Some(team_b))
    );

    // No token, or a token from another issuer: unauthenticated.
    let mut anonymous = AuditServiceClient::connect(format!("http://{}", running.grpc_addr()))
        .await
        .unwrap();
    let err = anonymous.query(QueryRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let mut stranger = client(&running, &TestIssuer::new().org(&[OrgRole::Admin])).await;
    assert_eq!(
        denied(query(&mut stranger, None).await),
        tonic::Code::Unauthenticated
    );

    shutdown.cancel();
    running.wait().await.unwrap();
    test_db.cleanup().await;
}

// ---- Event intake -------------------------------------------------------------------

/// Which bus the intake tests run the service against.
#[derive(Debug, Clone, Copy)]
enum BusUnder {
    Memory,
    Nats,
}

/// A database and a bus for running the whole service, possibly more than once.
struct IntakeEnv {
    config: AuditConfig,
    test_db: TestDb,
    memory: Option<Arc<dyn godel_bus::Bus>>,
    nats: Option<TestNats>,
    publisher: Arc<dyn godel_bus::Bus>,
    _dir: tempfile::TempDir,
}

impl IntakeEnv {
    async fn new(kind: Kind, bus: BusUnder) -> Self {
        let test_db = TestDb::of(kind).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(&test_db, dir.path().to_owned(), 0);
        let (memory, nats, publisher) = match bus {
            BusUnder::Memory => {
                let bus: Arc<dyn godel_bus::Bus> = Arc::new(MemoryBus::default());
                (Some(bus.clone()), None, bus)
            }
            BusUnder::Nats => {
                let nats = TestNats::new().await;
                config.bus = BusConfig::nats(
                    nats.url.clone(),
                    nats.stream_name.clone(),
                    nats.subject_prefix.clone(),
                );
                let publisher = godel_bus::connect(&config.bus).await.unwrap();
                (None, Some(nats), publisher)
            }
        };
        Self {
            config,
            test_db,
            memory,
            nats,
            publisher,
            _dir: dir,
        }
    }

    /// Starts the service; NATS gets a fresh connection each time, as after a restart.
    async fn start(&self) -> (godel_runtime::RunningService, CancellationToken) {
        let deps = match &self.memory {
            Some(bus) => Dependencies { bus: bus.clone() },
            None => Dependencies::connect(&self.config.bus).await.unwrap(),
        };
        let shutdown = CancellationToken::new();
        let running = godel_audit::start(self.config.clone(), deps, shutdown.clone())
            .await
            .unwrap();
        (running, shutdown)
    }

    /// A log over the service's (migrated) database, for assertions.
    async fn log(&self) -> (AuditLog, Db) {
        let db = godel_store::connect(&self.config.database).await.unwrap();
        (AuditLog::open(db.clone(), &self.config).unwrap(), db)
    }

    /// Publishes `payload` on `subject` under a fresh message id, so the bus does not
    /// drop a repeated event: to the consumer it is a second delivery of the event.
    async fn publish(&self, subject: Subject, payload: &[u8], traceparent: Option<&str>) {
        let mut headers = godel_bus::Headers::new();
        if let Some(tp) = traceparent {
            headers.insert("traceparent".to_owned(), tp.to_owned());
        }
        self.publisher
            .publish(OutgoingMessage {
                id: godel_test_utils::unique_name("msg"),
                subject,
                headers,
                payload: payload.to_vec().into(),
            })
            .await
            .unwrap();
    }

    async fn finish(self) {
        if let Some(nats) = &self.nats {
            nats.cleanup().await;
        }
        self.test_db.cleanup().await;
    }
}

/// A CloudEvent as the scheduler publishes it; returns its id and bytes.
fn task_event(team: TeamId, to_state: &str, n: usize) -> (EventId, Vec<u8>) {
    let id = EventId::new();
    let task = format!("tsk_{:032x}", n + 1);
    let data = serde_json::json!({
        "teamId": team.to_string(),
        "taskId": task,
        "toState": format!("TASK_STATE_{}", to_state.to_ascii_uppercase()),
        "epoch": "1",
    });
    let bytes = cloudevent::encode(
        id,
        "/godel/scheduler",
        &cloudevent::event_type("task", to_state),
        &task,
        DateTime::from_timestamp(T0 + n as i64, 0).unwrap(),
        &data,
    )
    .unwrap();
    (id, bytes)
}

/// Records of the whole log, oldest first.
async fn all_records(log: &AuditLog) -> Vec<godel_audit::Record> {
    let (mut records, next) = log.query(&Filter::default(), 1000, None).await.unwrap();
    assert!(next.is_none());
    records.reverse();
    records
}

async fn wait_for_records(log: &AuditLog, what: &str, n: usize) -> Vec<godel_audit::Record> {
    eventually(what, Duration::from_secs(20), || async {
        let records = all_records(log).await;
        (records.len() >= n).then_some(records)
    })
    .await
}

async fn intake_records_each_event_once(kind: Kind, bus: BusUnder) {
    let env = IntakeEnv::new(kind, bus).await;
    let (running, shutdown) = env.start().await;
    let (log, db) = env.log().await;
    let team = TeamId::new();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (task_id, task) = task_event(team, "queued", 0);
    env.publish(
        Subject::task(team, "queued"),
        &task,
        Some(&format!("00-{trace}-00f067aa0ba902b7-01")),
    )
    .await;
    let iam_id = EventId::new();
    let iam = cloudevent::encode(
        iam_id,
        "/godel/auth",
        &cloudevent::event_type("iam", "member_added"),
        "usr_00000000000000000000000000000002",
        DateTime::from_timestamp(T0 + 5, 0).unwrap(),
        &serde_json::json!({
            "teamId": team.to_string(),
            "change": "IAM_CHANGE_MEMBER_ADDED",
            "actor": {
                "subjectKind": "SUBJECT_KIND_API_KEY",
                "subjectId": "key_00000000000000000000000000000001",
                "teamId": team.to_string(),
                "roles": ["team-admin"],
            },
            "subjectId": "usr_00000000000000000000000000000002",
            "roles": ["developer"],
        }),
    )
    .unwrap();
    env.publish(Subject::iam(team, "member_added"), &iam, None)
        .await;
    // The task event again, then a marker behind it on the same subject: once the
    // marker is recorded, the repeat has been handled.
    env.publish(Subject::task(team, "queued"), &task, None)
        .await;
    let (marker_id, marker) = task_event(team, "queued", 1);
    env.publish(Subject::task(team, "queued"), &marker, None)
        .await;

    let records = wait_for_records(&log, "three audit records", 3).await;
    let ids: Vec<_> = records.iter().map(|r| r.id).collect();
    assert!(ids.contains(&AuditRecordId::from_uuid(marker_id.as_uuid())));
    assert_eq!(records.len(), 3, "the repeated event was stored twice");

    let task_record = records
        .iter()
        .find(|r| r.id == AuditRecordId::from_uuid(task_id.as_uuid()))
        .unwrap();
    assert_eq!(task_record.team_id, Some(team));
    assert_eq!(
        task_record.occurred_at,
        DateTime::from_timestamp(T0, 0).unwrap()
    );
    let body = task_record.body.clone().unwrap();
    assert_eq!(body.action, "task.queued");
    assert_eq!(body.outcome, Outcome::Success);
    assert_eq!(body.trace_id, trace);
    assert_eq!(
        (body.actor.kind, body.actor.subject_id.as_str()),
        (ActorKind::Service, "scheduler")
    );
    assert_eq!(body.resource, format!("tsk_{:032x}", 1));
    let details: serde_json::Value = serde_json::from_str(&body.details_json).unwrap();
    assert_eq!(details["toState"], "TASK_STATE_QUEUED");

    let iam_record = records
        .iter()
        .find(|r| r.id == AuditRecordId::from_uuid(iam_id.as_uuid()))
        .unwrap();
    let body = iam_record.body.clone().unwrap();
    assert_eq!(body.action, "iam.member_added");
    assert_eq!(body.actor.kind, ActorKind::ApiKey);
    assert_eq!(body.actor.team_id, Some(team));
    assert_eq!(body.actor.roles, vec!["team-admin".to_owned()]);
    assert_eq!(body.trace_id, "");

    assert!(log.verify(0, 0).await.unwrap().ok());
    shutdown.cancel();
    running.wait().await.unwrap();
    db.close().await.unwrap();
    env.finish().await;
}

async fn intake_survives_a_restart(kind: Kind, bus: BusUnder) {
    let env = IntakeEnv::new(kind, bus).await;
    let team = TeamId::new();
    let subject = Subject::task(team, "running");
    let events: Vec<_> = (0..10).map(|i| task_event(team, "running", i)).collect();

    let (running, shutdown) = env.start().await;
    let (log, db) = env.log().await;
    for (_, bytes) in &events[..5] {
        env.publish(subject.clone(), bytes, None).await;
    }
    wait_for_records(&log, "the first five records", 5).await;
    shutdown.cancel();
    running.wait().await.unwrap();

    // While the service is down: new events and repeats of acknowledged ones.
    for (_, bytes) in events[5..].iter().chain(&events[..2]) {
        env.publish(subject.clone(), bytes, None).await;
    }
    let (marker_id, marker) = task_event(team, "running", 10);
    env.publish(subject.clone(), &marker, None).await;

    let (running, shutdown) = env.start().await;
    let records = eventually(
        "the marker after the restart",
        Duration::from_secs(20),
        || async {
            let records = all_records(&log).await;
            records
                .iter()
                .any(|r| r.id == AuditRecordId::from_uuid(marker_id.as_uuid()))
                .then_some(records)
        },
    )
    .await;
    let mut expected: Vec<_> = events
        .iter()
        .map(|(id, _)| AuditRecordId::from_uuid(id.as_uuid()))
        .chain([AuditRecordId::from_uuid(marker_id.as_uuid())])
        .collect();
    let mut stored: Vec<_> = records.iter().map(|r| r.id).collect();
    expected.sort();
    stored.sort();
    assert_eq!(stored, expected, "records lost or stored twice");
    let sequences: Vec<_> = records.iter().map(|r| r.sequence).collect();
    assert_eq!(sequences, (1..=11).collect::<Vec<u64>>());
    assert!(log.verify(0, 0).await.unwrap().ok());

    shutdown.cancel();
    running.wait().await.unwrap();
    db.close().await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_on_the_memory_bus_records_each_event_once() {
    intake_records_each_event_once(Kind::Sqlite, BusUnder::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_on_nats_records_each_event_once() {
    intake_records_each_event_once(Kind::Postgres, BusUnder::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_on_the_memory_bus_survives_a_restart() {
    intake_survives_a_restart(Kind::Sqlite, BusUnder::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_on_nats_survives_a_restart() {
    intake_survives_a_restart(Kind::Postgres, BusUnder::Nats).await;
}

// ---- Retention and erasure ----------------------------------------------------------

const DAY: i64 = 86_400;

fn at(secs: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// The record with `id`, wherever it is in the log.
async fn find(log: &AuditLog, id: AuditRecordId) -> godel_audit::Record {
    all_records(log)
        .await
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("record {id} is not stored"))
}

async fn retention_removes_exactly_the_expired_payloads(kind: Kind) {
    let (team_a, team_b) = (TeamId::new(), TeamId::new());
    // Team A keeps 10 days, everything else 20.
    let retention = RetentionConfig {
        period: days(20),
        teams: vec![TeamRetention {
            team_id: team_a,
            period: days(10),
        }],
        interval: Duration::ZERO,
    };
    let h = Harness::with_config(kind, |c| c.retention = retention).await;
    let mut records = Vec::new();
    for (i, (team, secs)) in [
        (Some(team_a), T0),
        (Some(team_a), T0 + 20 * DAY),
        (Some(team_b), T0),
        (Some(team_b), T0 + 20 * DAY),
        (None, T0),
        (None, T0 + 20 * DAY),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = record(i, team);
        r.occurred_at = at(secs);
        records.push(r);
    }
    h.log.append(records.clone()).await.unwrap();
    // It is day 25.
    let now = at(T0 + 25 * DAY);
    let timer = Requester::service("scheduled retention");
    let outcome = h.log.apply_retention(now, &timer).await.unwrap();
    assert_eq!(outcome.payloads_removed, 3);

    for (i, r) in records.iter().enumerate() {
        let stored = find(&h.log, r.id).await;
        let expired = i == 0 || i == 2 || i == 4;
        assert_eq!(stored.body.is_none(), expired, "record {i}: {stored:?}");
    }
    let own = find(&h.log, outcome.record.unwrap()).await;
    let body = own.body.unwrap();
    assert_eq!(body.action, "audit.retention");
    assert_eq!(body.actor.kind, ActorKind::Service);
    let details: serde_json::Value = serde_json::from_str(&body.details_json).unwrap();
    assert_eq!(details["payloads_removed"], 3);
    assert_eq!(details["rules"].as_array().unwrap().len(), 2, "{details}");

    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records_checked, report.erased_payloads), (7, 3));
    assert_eq!(h.int("SELECT count(*) AS n FROM audit_chain").await, 7);

    // Nothing more has expired: no removal and no record of one.
    let again = h.log.apply_retention(now, &timer).await.unwrap();
    assert_eq!(again, RetentionOutcome::default());
    assert_eq!(all_records(&h.log).await.len(), 7);
    // Years later the retention record itself is kept: verification relies on it.
    let later = at(T0 + 5000 * DAY);
    let last = h.log.apply_retention(later, &timer).await.unwrap();
    assert_eq!(last.payloads_removed, 3);
    assert!(find(&h.log, outcome.record.unwrap()).await.body.is_some());
    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records_checked, report.erased_payloads), (8, 6));
    h.finish().await;
}

async fn erasure_scrubs_the_subject_and_keeps_verify_green(kind: Kind) {
    let h = Harness::new(kind).await;
    let subject = format!("usr_{:032x}", 0xaaaa);
    let other = format!("usr_{:032x}", 0xbbbb);
    let mut acted = record(0, None);
    acted.body.actor.subject_id = subject.clone();
    let mut mentioned = record(1, None);
    mentioned.body.actor.subject_id = other.clone();
    mentioned.body.resource = format!("/v1/members/{subject}");
    mentioned.body.details_json = format!(r#"{{"member":"{subject}","status":200}}"#);
    let mut unrelated = record(2, None);
    unrelated.body.actor.subject_id = other.clone();
    h.log
        .append(vec![acted.clone(), mentioned.clone(), unrelated.clone()])
        .await
        .unwrap();
    let before_unrelated = find(&h.log, unrelated.id).await;

    let outcome = h
        .log
        .erase_subject(&subject, &operator("GDPR request 42"))
        .await
        .unwrap();
    assert_eq!(outcome.records_scrubbed, 2);

    let stored = find(&h.log, acted.id).await.body.unwrap();
    assert_eq!(stored.actor.subject_id, "[erased]");
    assert_eq!(stored.action, acted.body.action);
    let stored = find(&h.log, mentioned.id).await.body.unwrap();
    assert_eq!(stored.resource, "/v1/members/[erased]");
    let details: serde_json::Value = serde_json::from_str(&stored.details_json).unwrap();
    assert_eq!(details["member"], "[erased]");
    assert_eq!(details["status"], 200);
    assert_ne!(stored.actor.subject_id, "[erased]");
    assert_eq!(find(&h.log, unrelated.id).await, before_unrelated);

    let stored_form = h.log.redactor().text(&subject).text;
    let leftovers = h
        .int(&format!(
            "SELECT count(*) AS n FROM audit_payload WHERE actor_id LIKE '%{stored_form}%' \
             OR resource LIKE '%{stored_form}%' OR details LIKE '%{stored_form}%'"
        ))
        .await;
    assert_eq!(leftovers, 0);

    let own = find(&h.log, outcome.record).await.body.unwrap();
    assert_eq!(own.action, "audit.erasure");
    assert_eq!(own.actor, operator("").actor);
    assert!(!own.details_json.contains(&stored_form), "{own:?}");
    let details: serde_json::Value = serde_json::from_str(&own.details_json).unwrap();
    assert_eq!(details["records_scrubbed"], 2);
    assert_eq!(details["reason"], "GDPR request 42");
    assert_eq!(details["scrubbed"][0][0], 1);
    assert_eq!(details["scrubbed"][1][0], 2);

    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records_checked, report.erased_payloads), (4, 2));
    // A payload changed without the erasure mark is still caught.
    h.exec("UPDATE audit_payload SET action = 'x' WHERE sequence = 3")
        .await;
    h.expect_damage(3, DamageKind::Modified, Damage::HashMismatch)
        .await;
    h.finish().await;
}

async fn retention_overrides_apply_after_restart_and_with_config(kind: Kind) {
    let (team_a, team_b) = (TeamId::new(), TeamId::new());
    let h = Harness::with_config(kind, |c| {
        c.retention.period = Duration::ZERO;
        c.retention.teams = vec![TeamRetention {
            team_id: team_b,
            period: days(10),
        }];
    })
    .await;
    let policy = h.log.retention().await.unwrap();
    assert_eq!(policy.teams.len(), 1);
    assert_eq!(policy.teams[0].source, PolicySource::Config);

    let (policy, id) = h
        .log
        .set_team_retention(team_a, Some(days(5)), &operator("shorter for A"))
        .await
        .unwrap();
    assert_eq!(policy.teams.len(), 2);
    let a = policy.teams.iter().find(|t| t.team_id == team_a).unwrap();
    assert_eq!((a.period, a.source), (days(5), PolicySource::Api));
    let own = find(&h.log, id).await;
    assert_eq!(own.team_id, Some(team_a));
    assert_eq!(own.body.unwrap().action, "audit.retention_policy.set");
    // An override replaces the configured period of the same team.
    let (policy, _) = h
        .log
        .set_team_retention(team_b, Some(Duration::ZERO), &operator("keep B"))
        .await
        .unwrap();
    let b = policy.teams.iter().find(|t| t.team_id == team_b).unwrap();
    assert_eq!((b.period, b.source), (Duration::ZERO, PolicySource::Api));

    // Another process on the same database (a restart) sees the overrides.
    let other = AuditLog::open(h.db.clone(), &h.config).unwrap();
    assert_eq!(other.retention().await.unwrap(), policy);

    let mut old_a = record(0, Some(team_a));
    old_a.occurred_at = at(T0);
    let mut old_b = record(1, Some(team_b));
    old_b.occurred_at = at(T0);
    h.log
        .append(vec![old_a.clone(), old_b.clone()])
        .await
        .unwrap();
    let outcome = other
        .apply_retention(at(T0 + 30 * DAY), &operator("monthly"))
        .await
        .unwrap();
    assert_eq!(outcome.payloads_removed, 1);
    assert!(find(&h.log, old_a.id).await.body.is_none());
    assert!(find(&h.log, old_b.id).await.body.is_some());

    // Removing the override brings the configured period back.
    let (policy, _) = h
        .log
        .set_team_retention(team_b, None, &operator("back to config"))
        .await
        .unwrap();
    let b = policy.teams.iter().find(|t| t.team_id == team_b).unwrap();
    assert_eq!((b.period, b.source), (days(10), PolicySource::Config));
    let outcome = h
        .log
        .apply_retention(at(T0 + 30 * DAY), &operator("again"))
        .await
        .unwrap();
    assert_eq!(outcome.payloads_removed, 1);
    assert!(find(&h.log, old_b.id).await.body.is_none());
    let report = h.log.verify(0, 0).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.erased_payloads, 2);
    h.finish().await;
}

/// The actor an org-admin `user` is recorded as.
fn admin_actor(user: UserId) -> Caller {
    Caller {
        subject_kind: SubjectKind::User as i32,
        subject_id: user.to_string(),
        team_id: String::new(),
        roles: vec![OrgRole::Admin.name().to_owned()],
    }
}

async fn retention_and_erasure_over_grpc(kind: Kind) {
    let test_db = TestDb::of(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&test_db, dir.path().to_owned(), 0);
    // Nothing expires by configuration; the timer runs often.
    config.retention = RetentionConfig {
        period: Duration::ZERO,
        teams: Vec::new(),
        interval: Duration::from_millis(50),
    };
    let deps = Dependencies::connect(&config.bus).await.unwrap();
    let shutdown = CancellationToken::new();
    let issuer = TestIssuer::new();
    let running =
        godel_audit::start_with_verifier(config, deps, issuer.verifier(), shutdown.clone())
            .await
            .unwrap();
    let admin = UserId::new();
    let mut client = client(
        &running,
        &issuer.sign(admin, None, PermissionSet::EMPTY, &[OrgRole::Admin]),
    )
    .await;
    let mut auditor = self::client(&running, &issuer.org(&[OrgRole::Auditor])).await;

    let (team_a, team_b) = (TeamId::new(), TeamId::new());
    let records: Vec<_> = (0..6)
        .map(|i| proto(&record(i, Some(if i < 3 { team_a } else { team_b }))))
        .collect();
    client
        .append(AppendRequest {
            records: records.clone(),
        })
        .await
        .unwrap();
    let reader = client.clone();
    let query = |filter: AuditFilter| {
        let mut client = reader.clone();
        async move {
            client
                .query(QueryRequest {
                    filter: Some(filter),
                    page: Some(PageRequest {
                        page_size: 100,
                        page_token: String::new(),
                    }),
                })
                .await
                .unwrap()
                .into_inner()
                .records
        }
    };

    // Only the service writes `audit.` records.
    let mut forged = proto(&record(9, None));
    forged.action = "audit.erasure".into();
    let err = client
        .append(AppendRequest {
            records: vec![forged],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Erasure: records 0 and 3 have the same actor.
    let subject = records[0].actor.as_ref().unwrap().subject_id.clone();
    let err = auditor
        .erase_subject(EraseSubjectRequest {
            subject_id: subject.clone(),
            reason: "an auditor may read, not erase".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let erased = client
        .erase_subject(EraseSubjectRequest {
            subject_id: subject.clone(),
            reason: "GDPR request 7".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.records_scrubbed, 2);
    let by_subject = query(AuditFilter {
        actor_id: subject.clone(),
        ..AuditFilter::default()
    })
    .await;
    assert!(by_subject.is_empty(), "{by_subject:?}");
    let erasures = query(AuditFilter {
        action: "audit.erasure".into(),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(erasures.len(), 1);
    assert_eq!(erasures[0].id, erased.record_id);
    assert_eq!(erasures[0].actor, Some(admin_actor(admin)));
    let verify = client
        .verify(VerifyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verify.ok, "{verify:?}");
    assert_eq!((verify.records_checked, verify.erased_payloads), (7, 2));

    // Retention: nothing configured; team A gets 1 day (its records are from 2023),
    // and the timer removes them.
    let policy = client
        .get_retention(GetRetentionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(policy.teams.is_empty(), "{policy:?}");
    assert_eq!(policy.interval.unwrap().nanos, 50_000_000);
    let set = client
        .set_team_retention(SetTeamRetentionRequest {
            team_id: team_a.to_string(),
            period: Some(Duration::from_secs(86_400).into()),
            reason: "team A keeps a day".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let teams = set.retention.unwrap().teams;
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0].team_id, team_a.to_string());
    assert_eq!(teams[0].source, RetentionSource::Api as i32);
    eventually(
        "the timer removes team A's payloads",
        Duration::from_secs(20),
        || {
            let query = &query;
            async move {
                let runs = query(AuditFilter {
                    action: "audit.retention".into(),
                    ..AuditFilter::default()
                })
                .await;
                (!runs.is_empty()).then_some(runs)
            }
        },
    )
    .await;
    let team_a_records = query(AuditFilter {
        team_id: team_a.to_string(),
        ..AuditFilter::default()
    })
    .await;
    // The three records (bodies gone) and the policy change.
    assert_eq!(team_a_records.len(), 4, "{team_a_records:?}");
    let bodies: Vec<_> = team_a_records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(bodies, ["audit.retention_policy.set", "", "", ""]);
    let run = query(AuditFilter {
        action: "audit.retention".into(),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(
        run.len(),
        1,
        "the timer records only runs that removed something"
    );
    assert_eq!(run[0].actor.as_ref().unwrap().subject_id, "audit");

    // A run someone asks for is recorded even when nothing expired.
    let applied = client
        .apply_retention(ApplyRetentionRequest {
            reason: "quarterly review".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.payloads_removed, 0);
    assert!(!applied.record_id.is_empty());

    let verify = client
        .verify(VerifyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verify.ok, "{verify:?}");
    // Records 1-3 removed (record 1 was also scrubbed), record 4 scrubbed.
    assert_eq!(verify.erased_payloads, 4, "{verify:?}");
    assert_eq!(verify.records_checked, 10, "{verify:?}");

    // Clearing the override.
    let cleared = client
        .set_team_retention(SetTeamRetentionRequest {
            team_id: team_a.to_string(),
            period: None,
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.retention.unwrap().teams.is_empty());
    shutdown.cancel();
    running.wait().await.unwrap();
    test_db.cleanup().await;
}
