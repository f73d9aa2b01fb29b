//! The task queue through its public API: every case runs on SQLite and on
//! PostgreSQL (a fresh schema on the test server); the concurrency case runs on
//! PostgreSQL with several independent pools.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use godel_bus::memory::MemoryBus;
use godel_error::{Error, ErrorCode};
use godel_proto::events::v1::{PlanEvent, TaskEvent};
use godel_proto::scheduler::v1::{PlanState as ProtoPlanState, TaskState as ProtoState};
use godel_scheduler::queue::{
    Completion, FailOutcome, Failure, LeasedTask, ListTasks, MAX_ERROR_CODE_LEN, MAX_LABELS,
    NewPlan, NewTask, PlanDetail, PlanState, PlanTask, Queue, TaskState, TeamSettings,
};
use godel_scheduler::registry::{Registration, Registry};
use godel_scheduler::{Migrator, QueueConfig};
use godel_store::sea_orm::{ConnectionTrait, Statement};
use godel_store::{DatabaseConfig, Db, OutboxRelay, RelayConfig};
use godel_test_utils::eventually;
use godel_test_utils::postgres::{DbKind as Kind, TestDb};
use godel_types::{OrchestratorId, ProfileId, TaskId, TeamId};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const LEASE: Duration = Duration::from_secs(30);

/// A migrated database and a queue over it. The outbox relay is not running, so
/// every event written stays readable in the `outbox` table.
struct Harness {
    queue: Queue,
    db: Db,
    config: DatabaseConfig,
    test_db: TestDb,
}

impl Harness {
    async fn new(kind: Kind) -> Self {
        Self::with_config(kind, QueueConfig::default()).await
    }

    async fn with_config(kind: Kind, queue_config: QueueConfig) -> Self {
        let test_db = TestDb::of(kind).await;
        let config = DatabaseConfig {
            url: test_db.url.clone().into(),
            schema: test_db.schema.clone(),
            ..DatabaseConfig::default()
        };
        let db = godel_store::connect(&config).await.unwrap();
        godel_store::migrate::<Migrator>(&db).await.unwrap();
        let queue = queue_over(&db, queue_config);
        Self {
            queue,
            db,
            config,
            test_db,
        }
    }

    /// Another queue on its own pool (another replica).
    async fn replica(&self) -> Queue {
        let db = godel_store::connect(&self.config).await.unwrap();
        queue_over(&db, self.queue.config().clone())
    }

    async fn finish(self) {
        self.db.close().await.unwrap();
        self.test_db.cleanup().await;
    }

    /// `(subject, payload)` of every outbox row, in order.
    async fn outbox(&self) -> Vec<(String, Vec<u8>)> {
        let conn = self.db.conn();
        let rows = conn
            .query_all_raw(Statement::from_string(
                conn.get_database_backend(),
                "SELECT subject, payload FROM outbox ORDER BY seq",
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.try_get::<String>("", "subject").unwrap(),
                    r.try_get::<Vec<u8>>("", "payload").unwrap(),
                )
            })
            .collect()
    }
}

fn queue_over(db: &Db, config: QueueConfig) -> Queue {
    let relay = OutboxRelay::new(
        db.clone(),
        Arc::new(MemoryBus::default()),
        RelayConfig::new("scheduler"),
    );
    Queue::new(db.clone(), relay.notifier(), config)
}

fn task(n: usize) -> NewTask {
    NewTask::new("code.review", json!({ "n": n }))
}

fn code(e: &Error) -> ErrorCode {
    e.code
}

async fn lease(q: &Queue, max: usize) -> Vec<LeasedTask> {
    q.lease(OrchestratorId::new(), max, LEASE).await.unwrap()
}

async fn idempotent_submission(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let first = h
        .queue
        .submit(team, task(1).idempotency_key("k1"))
        .await
        .unwrap();
    assert_eq!(first.state, TaskState::Queued);
    let again = h
        .queue
        .submit(team, task(1).idempotency_key("k1"))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    let err = h
        .queue
        .submit(team, task(2).idempotency_key("k1"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::Conflict, "{err:?}");
    assert!(err.message.contains(&first.id.to_string()), "{err:?}");
    // Keys are per team.
    let other = h
        .queue
        .submit(TeamId::new(), task(2).idempotency_key("k1"))
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
    // In a batch: a known key resolves to the existing task, a new one is created.
    let batch = h
        .queue
        .submit_batch(
            team,
            vec![task(1).idempotency_key("k1"), task(3).idempotency_key("k3")],
        )
        .await
        .unwrap();
    assert_eq!(batch[0].id, first.id);
    assert_ne!(batch[1].id, first.id);
    let page = h.queue.list(team, ListTasks::default()).await.unwrap();
    assert_eq!(page.items.len(), 2);
    h.finish().await;
}

/// Replicas submitting the same idempotency key at the same moment all get the one
/// task: the submission that loses the unique-key race finds the winner's task on a
/// second pass instead of failing.
async fn concurrent_submissions_of_one_key_return_one_task(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    // PostgreSQL: replicas on pools of their own. SQLite serves one process: its
    // one queue, whose writers take turns.
    let replicas = match kind {
        Kind::Postgres => vec![h.replica().await, h.replica().await, h.replica().await],
        Kind::Sqlite => vec![h.queue.clone()],
    };
    for round in 0..5 {
        let key = format!("race-{round}");
        let mut calls = tokio::task::JoinSet::new();
        for (i, q) in replicas.iter().cycle().take(9).enumerate() {
            let (q, key) = (q.clone(), key.clone());
            calls.spawn(async move {
                if i % 2 == 0 {
                    q.submit(team, task(1).idempotency_key(key)).await
                } else {
                    let mut out = q
                        .submit_group(vec![(team, task(1).idempotency_key(key))])
                        .await?;
                    out.pop().unwrap().map(|s| s.task)
                }
            });
        }
        let mut ids = std::collections::BTreeSet::new();
        while let Some(joined) = calls.join_next().await {
            let task = joined
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            ids.insert(task.id);
        }
        assert_eq!(
            ids.len(),
            1,
            "round {round}: one task for the key, got {ids:?}"
        );
    }
    h.finish().await;
}

async fn validation_names_the_field(kind: Kind) {
    let config = QueueConfig {
        max_payload_bytes: 64,
        ..QueueConfig::default()
    };
    let h = Harness::with_config(kind, config).await;
    let team = TeamId::new();
    let cases = [
        (task(1).priority(0), "task.priority"),
        (task(1).priority(101), "task.priority"),
        (NewTask::new("  ", json!({})), "task.task_type"),
        (NewTask::new("x".repeat(200), json!({})), "task.task_type"),
        (
            NewTask::new("t", json!({ "big": "y".repeat(100) })),
            "task.payload",
        ),
        (task(1).max_attempts(0), "task.max_attempts"),
        (task(1).max_attempts(1000), "task.max_attempts"),
        (task(1).idempotency_key(""), "task.idempotency_key"),
    ];
    for (t, field) in cases {
        let err = h.queue.submit(team, t).await.unwrap_err();
        assert_eq!(code(&err), ErrorCode::InvalidArgument, "{err:?}");
        assert_eq!(err.field.as_deref(), Some(field), "{err:?}");
    }
    let err = h
        .queue
        .submit_batch(team, vec![task(1), task(2).priority(0)])
        .await
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("tasks[1].priority"), "{err:?}");
    // Nothing of the refused batch was written.
    assert!(
        h.queue
            .list(team, ListTasks::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    h.finish().await;
}

async fn backpressure(kind: Kind) {
    let config = QueueConfig {
        max_queue_depth: 8,
        backpressure_retry_after: Duration::from_secs(7),
        ..QueueConfig::default()
    };
    let h = Harness::with_config(kind, config).await;
    let (a, b) = (TeamId::new(), TeamId::new());
    h.queue
        .set_team_settings(
            a,
            TeamSettings {
                weight: 1,
                max_concurrent: None,
                max_queued: Some(3),
            },
        )
        .await
        .unwrap();
    h.queue
        .submit_batch(a, (0..3).map(task).collect())
        .await
        .unwrap();
    let err = h.queue.submit(a, task(9)).await.unwrap_err();
    assert_eq!(code(&err), ErrorCode::ResourceExhausted, "{err:?}");
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    // Another team is only bound by the global depth (8): 5 more fit, the 6th does not.
    h.queue
        .submit_batch(b, (0..5).map(task).collect())
        .await
        .unwrap();
    let err = h.queue.submit(b, task(9)).await.unwrap_err();
    assert_eq!(code(&err), ErrorCode::ResourceExhausted, "{err:?}");
    assert!(err.retry_after.is_some());
    // Leasing frees room in the queue.
    assert_eq!(lease(&h.queue, 1).await.len(), 1);
    h.queue.submit(b, task(9)).await.unwrap();
    h.finish().await;
}

async fn wfq_shares_follow_weights(kind: Kind) {
    let h = Harness::new(kind).await;
    let teams = [
        (TeamId::new(), 1u32),
        (TeamId::new(), 2),
        (TeamId::new(), 5),
    ];
    for (team, weight) in teams {
        h.queue
            .set_team_settings(
                team,
                TeamSettings {
                    weight,
                    ..TeamSettings::default()
                },
            )
            .await
            .unwrap();
        h.queue
            .submit_batch(team, (0..80).map(task).collect())
            .await
            .unwrap();
    }
    let mut counts: HashMap<TeamId, usize> = HashMap::new();
    for _ in 0..10 {
        for leased in lease(&h.queue, 8).await {
            *counts.entry(leased.task.team_id).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    assert_eq!(total, 80);
    for (team, weight) in teams {
        let got = counts.get(&team).copied().unwrap_or(0) as f64 / total as f64;
        let want = f64::from(weight) / 8.0;
        assert!(
            (got - want).abs() <= 0.03,
            "weight {weight}: share {got}, want {want}"
        );
    }
    h.finish().await;
}

async fn idle_team_gets_no_burst(kind: Kind) {
    let h = Harness::new(kind).await;
    let (busy, idle) = (TeamId::new(), TeamId::new());
    h.queue
        .submit_batch(busy, (0..60).map(task).collect())
        .await
        .unwrap();
    // Only `busy` has work: it gets everything.
    for l in lease(&h.queue, 20).await {
        assert_eq!(l.task.team_id, busy);
    }
    h.queue
        .submit_batch(idle, (0..30).map(task).collect())
        .await
        .unwrap();
    let next = lease(&h.queue, 10).await;
    let returning = next.iter().filter(|l| l.task.team_id == idle).count();
    assert!(
        (4..=6).contains(&returning),
        "returning team got {returning} of 10"
    );
    h.finish().await;
}

async fn priority_then_fifo(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let submitted = h
        .queue
        .submit_batch(
            team,
            vec![
                task(0).priority(10),
                task(1).priority(90),
                task(2).priority(50),
                task(3).priority(90),
            ],
        )
        .await
        .unwrap();
    let order: Vec<TaskId> = lease(&h.queue, 10)
        .await
        .iter()
        .map(|l| l.task.id)
        .collect();
    let want: Vec<TaskId> = [1, 3, 2, 0].iter().map(|i| submitted[*i].id).collect();
    assert_eq!(order, want);
    h.finish().await;
}

async fn concurrency_limit_per_team(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    h.queue
        .set_team_settings(
            team,
            TeamSettings {
                weight: 1,
                max_concurrent: Some(2),
                max_queued: None,
            },
        )
        .await
        .unwrap();
    h.queue
        .submit_batch(team, (0..5).map(task).collect())
        .await
        .unwrap();
    let first = lease(&h.queue, 10).await;
    assert_eq!(first.len(), 2);
    assert!(lease(&h.queue, 10).await.is_empty());
    h.queue
        .complete(first[0].task.id, first[0].epoch, json!({}))
        .await
        .unwrap();
    assert_eq!(lease(&h.queue, 10).await.len(), 1);
    h.finish().await;
}

async fn fencing_and_expired_leases(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let t = h.queue.submit(team, task(1).max_attempts(3)).await.unwrap();
    let (a, b) = (OrchestratorId::new(), OrchestratorId::new());
    let first = h
        .queue
        .lease(a, 1, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].epoch, 1);
    assert_eq!(first[0].task.lease_owner, Some(a));
    let stale = h.queue.complete(t.id, 0, json!({})).await.unwrap_err();
    assert_eq!(code(&stale), ErrorCode::FailedPrecondition, "{stale:?}");
    assert!(stale.message.contains("stale"), "{stale:?}");
    // Worker `a` pauses past its lease; the sweeper requeues the task.
    eventually("the expired lease to be swept", WAIT, || async {
        (h.queue.requeue_expired().await.unwrap() == 1).then_some(())
    })
    .await;
    let swept = h.queue.get(team, t.id).await.unwrap();
    assert_eq!(swept.state, TaskState::Queued);
    assert_eq!(swept.last_error.as_deref(), Some("lease expired"));
    let second = h.queue.lease(b, 1, LEASE).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].epoch, 2);
    assert_eq!(second[0].task.attempts, 2);
    // `a` resumes: all its writes are rejected; `b`'s succeed.
    for err in [
        h.queue
            .complete(t.id, 1, json!({"by": "a"}))
            .await
            .unwrap_err(),
        h.queue.heartbeat(t.id, 1, LEASE).await.unwrap_err(),
        h.queue.fail(t.id, 1, "boom", true).await.unwrap_err(),
    ] {
        assert_eq!(code(&err), ErrorCode::FailedPrecondition, "{err:?}");
    }
    h.queue.heartbeat(t.id, 2, LEASE).await.unwrap();
    assert_eq!(
        h.queue.get(team, t.id).await.unwrap().state,
        TaskState::Running
    );
    h.queue.complete(t.id, 2, json!({"by": "b"})).await.unwrap();
    // Completing again at the same epoch is accepted and changes nothing.
    h.queue.complete(t.id, 2, json!({"by": "b"})).await.unwrap();
    let done = h.queue.get(team, t.id).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(done.result, Some(json!({"by": "b"})));
    h.finish().await;
}

async fn expired_lease_past_attempts_is_dead_lettered(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let t = h.queue.submit(team, task(1).max_attempts(1)).await.unwrap();
    h.queue
        .lease(OrchestratorId::new(), 1, Duration::from_millis(100))
        .await
        .unwrap();
    eventually("the expired lease to be swept", WAIT, || async {
        (h.queue.requeue_expired().await.unwrap() == 1).then_some(())
    })
    .await;
    let dl = h.queue.dead_letter(team, t.id).await.unwrap();
    assert_eq!(dl.errors.len(), 1);
    assert_eq!(dl.errors[0].message, "lease expired");
    h.finish().await;
}

async fn complete_many_in_one_batch(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    h.queue
        .submit_batch(team, (0..4).map(task).collect())
        .await
        .unwrap();
    let leased = lease(&h.queue, 4).await;
    let mut completions: Vec<Completion> = leased
        .iter()
        .map(|l| Completion {
            task_id: l.task.id,
            epoch: l.epoch,
            result: json!({"ok": true}),
            owner: None,
        })
        .collect();
    completions[3].epoch = 7;
    // The same task twice, an unknown task, and a task claimed for another owner.
    completions.push(completions[0].clone());
    completions.push(Completion {
        task_id: TaskId::new(),
        epoch: 1,
        result: json!({}),
        owner: None,
    });
    let mut wrong_owner = completions[3].clone();
    wrong_owner.epoch = leased[3].epoch;
    wrong_owner.owner = Some(OrchestratorId::new());
    completions.push(wrong_owner);
    let outcomes = h.queue.complete_many(completions).await.unwrap();
    assert_eq!(outcomes.len(), 7);
    assert!(outcomes[..3].iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(
        code(outcomes[3].as_ref().unwrap_err()),
        ErrorCode::FailedPrecondition
    );
    let first = outcomes[0].as_ref().unwrap();
    assert_eq!(first.state, TaskState::Succeeded);
    assert_eq!(first.result, Some(json!({"ok": true})));
    assert_eq!(
        outcomes[4].as_ref().unwrap(),
        first,
        "a repeat gets the same outcome"
    );
    assert_eq!(code(outcomes[5].as_ref().unwrap_err()), ErrorCode::NotFound);
    assert_eq!(
        code(outcomes[6].as_ref().unwrap_err()),
        ErrorCode::FailedPrecondition
    );
    let succeeded_events = h
        .outbox()
        .await
        .iter()
        .filter(|(s, _)| s.ends_with(".task.succeeded"))
        .count();
    assert_eq!(
        succeeded_events, 3,
        "one event per task, not per completion"
    );
    let page = h
        .queue
        .list(
            team,
            ListTasks {
                state: Some(TaskState::Succeeded),
                ..ListTasks::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    h.finish().await;
}

async fn retry_backoff_and_dead_letters(kind: Kind) {
    let config = QueueConfig {
        retry_backoff_base: Duration::from_millis(300),
        retry_backoff_max: Duration::from_millis(600),
        ..QueueConfig::default()
    };
    let h = Harness::with_config(kind, config).await;
    let team = TeamId::new();
    let t = h.queue.submit(team, task(1).max_attempts(2)).await.unwrap();
    let l = lease(&h.queue, 1).await.remove(0);
    let outcome = h
        .queue
        .fail(t.id, l.epoch, "tool crashed", true)
        .await
        .unwrap();
    let FailOutcome::Retrying { not_before } = outcome else {
        panic!("expected a retry, got {outcome:?}");
    };
    let after_fail = h.queue.get(team, t.id).await.unwrap();
    assert_eq!(after_fail.state, TaskState::Queued);
    assert!(
        not_before > after_fail.updated_at,
        "{not_before} vs {}",
        after_fail.updated_at
    );
    assert!(not_before - after_fail.updated_at >= chrono::Duration::milliseconds(150));
    assert!(
        lease(&h.queue, 1).await.is_empty(),
        "leased before its backoff passed"
    );
    let l = eventually("the retry to become ready", WAIT, || async {
        lease(&h.queue, 1).await.pop()
    })
    .await;
    assert_eq!(l.epoch, 2);
    let outcome = h
        .queue
        .fail(t.id, l.epoch, "tool crashed again", true)
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::DeadLettered);

    let page = h.queue.dead_letters(team, None, 10, None).await.unwrap();
    assert_eq!(
        page.items.iter().map(|d| d.task.id).collect::<Vec<_>>(),
        vec![t.id]
    );
    assert_eq!(
        page.items[0]
            .errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        ["tool crashed", "tool crashed again"],
        "the list carries each dead letter's error history"
    );
    let dl = h.queue.dead_letter(team, t.id).await.unwrap();
    assert_eq!(dl.task.state, TaskState::DeadLettered);
    let messages: Vec<_> = dl
        .errors
        .iter()
        .map(|e| (e.attempt, e.epoch, e.message.as_str()))
        .collect();
    assert_eq!(
        messages,
        vec![(1, 1, "tool crashed"), (2, 2, "tool crashed again")]
    );

    // Requeued: claimable again with attempts reset and a new epoch.
    let requeued = h.queue.requeue_dead_letter(team, t.id).await.unwrap();
    assert_eq!((requeued.state, requeued.attempts), (TaskState::Queued, 0));
    let l = lease(&h.queue, 1).await.remove(0);
    assert_eq!((l.task.id, l.epoch, l.task.attempts), (t.id, 3, 1));
    // A failure that is not retryable dead-letters at once.
    assert_eq!(
        h.queue
            .fail(t.id, l.epoch, "bad input", false)
            .await
            .unwrap(),
        FailOutcome::DeadLettered
    );
    let other = h.queue.submit(team, task(2).max_attempts(1)).await.unwrap();
    let l = lease(&h.queue, 1).await.remove(0);
    h.queue.fail(other.id, l.epoch, "nope", true).await.unwrap();
    assert_eq!(
        h.queue
            .dead_letters(team, None, 10, None)
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    // Purge by id, then the rest.
    assert_eq!(h.queue.purge_dead_letters(team, &[t.id]).await.unwrap(), 1);
    let err = h.queue.dead_letter(team, t.id).await.unwrap_err();
    assert_eq!(code(&err), ErrorCode::NotFound);
    assert_eq!(
        h.queue
            .purge_dead_letters(TeamId::new(), &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(h.queue.purge_dead_letters(team, &[]).await.unwrap(), 1);
    assert!(
        h.queue
            .dead_letters(team, None, 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    h.finish().await;
}

async fn cancel_and_list(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let tasks = h
        .queue
        .submit_batch(team, (0..5).map(task).collect())
        .await
        .unwrap();
    let cancelled = h
        .queue
        .cancel(team, tasks[0].id, "not needed")
        .await
        .unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    let err = h
        .queue
        .cancel(team, tasks[0].id, "again")
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::FailedPrecondition);
    let err = h
        .queue
        .cancel(TeamId::new(), tasks[1].id, "")
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::NotFound, "team scopes every query");
    // A leased task can be cancelled; its holder can no longer complete it.
    let l = lease(&h.queue, 1).await.remove(0);
    h.queue.cancel(team, l.task.id, "stop").await.unwrap();
    let err = h
        .queue
        .complete(l.task.id, l.epoch, json!({}))
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::FailedPrecondition);

    // Pages of 2 by id; the state filter.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = h
            .queue
            .list(
                team,
                ListTasks {
                    state: None,
                    after,
                    limit: 2,
                    ..ListTasks::default()
                },
            )
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|t| t.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, tasks.iter().map(|t| t.id).collect::<Vec<_>>());
    let queued = h
        .queue
        .list(
            team,
            ListTasks {
                state: Some(TaskState::Queued),
                ..ListTasks::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(queued.items.len(), 3);
    h.finish().await;
}

async fn every_change_writes_an_event(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let t = h.queue.submit(team, task(1)).await.unwrap();
    let l = lease(&h.queue, 1).await.remove(0);
    h.queue.heartbeat(t.id, l.epoch, LEASE).await.unwrap();
    h.queue.heartbeat(t.id, l.epoch, LEASE).await.unwrap();
    h.queue.fail(t.id, l.epoch, "flaky", true).await.unwrap();
    let c = h.queue.submit(team, task(2)).await.unwrap();
    h.queue.cancel(team, c.id, "changed my mind").await.unwrap();
    let d = h.queue.submit(team, task(3).max_attempts(1)).await.unwrap();
    let l = lease(&h.queue, 1).await.remove(0);
    assert_eq!(l.task.id, d.id);
    h.queue.complete(d.id, l.epoch, json!({})).await.unwrap();

    let rows = h.outbox().await;
    let events: Vec<(String, TaskEvent)> = rows
        .iter()
        .map(|(subject, payload)| {
            let ev = godel_proto::cloudevent::decode::<TaskEvent>(payload).unwrap();
            assert_eq!(ev.subject.as_deref(), Some(ev.data.task_id.as_str()));
            (subject.clone(), ev.data)
        })
        .collect();
    let prefix = format!("godel.v1.team.{team}.task.");
    let got: Vec<(&str, String, ProtoState)> = events
        .iter()
        .map(|(s, e)| {
            (
                s.strip_prefix(&prefix).unwrap(),
                e.task_id.clone(),
                ProtoState::try_from(e.to_state).unwrap(),
            )
        })
        .collect();
    let (ti, ci, di) = (t.id.to_string(), c.id.to_string(), d.id.to_string());
    assert_eq!(
        got,
        vec![
            ("queued", ti.clone(), ProtoState::Queued),
            ("leased", ti.clone(), ProtoState::Leased),
            ("running", ti.clone(), ProtoState::Running),
            ("queued", ti.clone(), ProtoState::Queued),
            ("queued", ci.clone(), ProtoState::Queued),
            ("cancelled", ci, ProtoState::Cancelled),
            ("queued", di.clone(), ProtoState::Queued),
            ("leased", di.clone(), ProtoState::Leased),
            ("succeeded", di, ProtoState::Succeeded),
        ]
    );
    let retry = &events[3].1;
    assert_eq!(
        ProtoState::try_from(retry.from_state).unwrap(),
        ProtoState::Running
    );
    assert_eq!(
        (retry.epoch, retry.attempt, retry.reason.as_str()),
        (1, 1, "flaky")
    );
    let leased = &events[1].1;
    assert!(leased.orchestrator_id.starts_with("orc_"), "{leased:?}");
    assert_eq!(leased.epoch, 1);
    h.finish().await;
}

fn plan_of(name: &str, tasks: Vec<PlanTask>) -> NewPlan {
    NewPlan {
        name: name.to_owned(),
        idempotency_key: None,
        tasks,
    }
}

/// The task of `detail` with plan key `key`.
fn keyed(detail: &PlanDetail, key: &str) -> TaskId {
    detail
        .tasks
        .iter()
        .find(|t| t.task.plan_key.as_deref() == Some(key))
        .unwrap()
        .task
        .id
}

/// The state of every task of the plan, by key.
async fn plan_states(q: &Queue, team: TeamId, detail: &PlanDetail) -> HashMap<String, TaskState> {
    q.get_plan(team, detail.plan.id)
        .await
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| (t.task.plan_key.unwrap(), t.task.state))
        .collect()
}

async fn lease_and_complete(q: &Queue, want: usize) -> Vec<TaskId> {
    let leased = lease(q, 10).await;
    assert_eq!(leased.len(), want, "{leased:?}");
    for l in &leased {
        q.complete(l.task.id, l.epoch, json!({})).await.unwrap();
    }
    leased.iter().map(|l| l.task.id).collect()
}

async fn diamond_plan_readiness(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let (detail, created) = h
        .queue
        .submit_plan(
            team,
            plan_of(
                "diamond",
                vec![
                    PlanTask::new("d", task(4)).after(["b", "c"]),
                    PlanTask::new("a", task(1)),
                    PlanTask::new("b", task(2)).after(["a"]),
                    PlanTask::new("c", task(3)).after(["a"]),
                ],
            ),
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(detail.plan.state, PlanState::Running);
    assert_eq!(detail.plan.task_count, 4);
    let (a, b, c, d) = (
        keyed(&detail, "a"),
        keyed(&detail, "b"),
        keyed(&detail, "c"),
        keyed(&detail, "d"),
    );
    let got = h.queue.get_plan(team, detail.plan.id).await.unwrap();
    let d_deps = &got
        .tasks
        .iter()
        .find(|t| t.task.id == d)
        .unwrap()
        .depends_on;
    assert_eq!(d_deps, &vec![b, c]);
    assert_eq!(
        detail
            .tasks
            .iter()
            .find(|t| t.task.id == d)
            .unwrap()
            .depends_on,
        vec![b, c]
    );
    assert_eq!(h.queue.dependencies(team, b).await.unwrap(), vec![a]);
    let states = plan_states(&h.queue, team, &detail).await;
    assert_eq!(states["a"], TaskState::Queued);
    for key in ["b", "c", "d"] {
        assert_eq!(states[key], TaskState::Blocked, "{key}");
    }
    // Only `a` is runnable; then `b` and `c`; `d` only after both.
    assert_eq!(lease_and_complete(&h.queue, 1).await, vec![a]);
    let states = plan_states(&h.queue, team, &detail).await;
    assert_eq!(
        (states["b"], states["c"], states["d"]),
        (TaskState::Queued, TaskState::Queued, TaskState::Blocked)
    );
    let two = lease(&h.queue, 10).await;
    assert_eq!(two.len(), 2);
    h.queue
        .complete(two[0].task.id, two[0].epoch, json!({}))
        .await
        .unwrap();
    assert_eq!(
        plan_states(&h.queue, team, &detail).await["d"],
        TaskState::Blocked
    );
    assert!(lease(&h.queue, 10).await.is_empty());
    h.queue
        .complete(two[1].task.id, two[1].epoch, json!({}))
        .await
        .unwrap();
    assert_eq!(lease_and_complete(&h.queue, 1).await, vec![d]);
    let done = h.queue.get_plan(team, detail.plan.id).await.unwrap();
    assert_eq!(done.plan.state, PlanState::Succeeded);
    assert_eq!((done.plan.succeeded_count, done.plan.task_count), (4, 4));
    assert!(done.plan.finished_at.is_some());

    // Events: each task announced blocked or queued, unblocked ones queued from
    // blocked, the plan submitted then succeeded.
    let rows = h.outbox().await;
    let prefix = format!("godel.v1.team.{team}.");
    let subjects: Vec<&str> = rows
        .iter()
        .map(|(s, _)| s.strip_prefix(&prefix).unwrap())
        .collect();
    assert_eq!(
        &subjects[..5],
        &[
            "task.blocked",
            "task.queued",
            "task.blocked",
            "task.blocked",
            "plan.submitted"
        ]
    );
    assert_eq!(subjects.last(), Some(&"plan.succeeded"));
    assert_eq!(
        subjects.iter().filter(|s| s.starts_with("plan.")).count(),
        2
    );
    let unblocked: Vec<String> = rows
        .iter()
        .filter(|(s, _)| s.ends_with(".task.queued"))
        .map(|(_, p)| {
            godel_proto::cloudevent::decode::<TaskEvent>(p)
                .unwrap()
                .data
        })
        .filter(|e| e.from_state == ProtoState::Blocked as i32)
        .map(|e| e.task_id)
        .collect();
    assert_eq!(unblocked.len(), 3, "{unblocked:?}");
    assert_eq!(unblocked.last(), Some(&d.to_string()));
    let (_, last) = rows.last().unwrap();
    let ev = godel_proto::cloudevent::decode::<PlanEvent>(last).unwrap();
    assert_eq!(ev.type_, "dev.godel.plan.succeeded.v1");
    assert_eq!(ev.data.plan_id, detail.plan.id.to_string());
    assert_eq!(
        (
            ProtoPlanState::try_from(ev.data.from_state).unwrap(),
            ProtoPlanState::try_from(ev.data.to_state).unwrap(),
            ev.data.succeeded_count,
        ),
        (ProtoPlanState::Running, ProtoPlanState::Succeeded, 4)
    );
    h.finish().await;
}

async fn plan_failure_cancels_dependents(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let (detail, _) = h
        .queue
        .submit_plan(
            team,
            plan_of(
                "chain",
                vec![
                    PlanTask::new("build", task(1).max_attempts(1)),
                    PlanTask::new("test", task(2)).after(["build"]),
                    PlanTask::new("deploy", task(3)).after(["test"]),
                    PlanTask::new("docs", task(4)),
                ],
            ),
        )
        .await
        .unwrap();
    let build = keyed(&detail, "build");
    let leased = lease(&h.queue, 10).await;
    assert_eq!(leased.len(), 2);
    let l = leased.iter().find(|l| l.task.id == build).unwrap();
    assert_eq!(
        h.queue
            .fail(build, l.epoch, "compile error", true)
            .await
            .unwrap(),
        FailOutcome::DeadLettered
    );
    // Its dependents are cancelled, and so is the independent task that was
    // running: the plan ends as one unit, failed, in the same transaction.
    let got = h.queue.get_plan(team, detail.plan.id).await.unwrap();
    for t in &got.tasks {
        let key = t.task.plan_key.as_deref().unwrap();
        match key {
            "build" => assert_eq!(t.task.state, TaskState::DeadLettered),
            _ => {
                assert_eq!(t.task.state, TaskState::Cancelled, "{key}");
                let reason = t.task.last_error.as_deref().unwrap();
                assert!(reason.contains(&build.to_string()), "{reason}");
                assert!(reason.contains("\"build\""), "{reason}");
            }
        }
    }
    assert_eq!(got.plan.state, PlanState::Failed);
    assert_eq!(
        (
            got.plan.succeeded_count,
            got.plan.failed_count,
            got.plan.cancelled_count
        ),
        (0, 1, 3)
    );
    // The running sibling's lease is useless now.
    let docs = leased.iter().find(|l| l.task.id != build).unwrap();
    assert!(
        h.queue
            .complete(docs.task.id, docs.epoch, json!({}))
            .await
            .is_err()
    );
    let rows = h.outbox().await;
    let cancelled: Vec<TaskEvent> = rows
        .iter()
        .filter(|(s, _)| s.ends_with(".task.cancelled"))
        .map(|(_, p)| {
            godel_proto::cloudevent::decode::<TaskEvent>(p)
                .unwrap()
                .data
        })
        .collect();
    assert_eq!(cancelled.len(), 3);
    assert!(
        cancelled
            .iter()
            .all(|e| e.reason.contains(&build.to_string()))
    );
    assert!(
        cancelled
            .iter()
            .any(|e| e.task_id == docs.task.id.to_string() && e.reason.contains("failed for good")),
        "{cancelled:?}"
    );
    assert!(
        rows.last()
            .unwrap()
            .0
            .ends_with(&format!("{team}.plan.failed"))
    );

    // Requeued from the DLQ, the failed task gets the rest of its plan back: its
    // dependents wait for it again, the independent task is queued again, the plan
    // reopens and can still succeed.
    h.queue.requeue_dead_letter(team, build).await.unwrap();
    let got = h.queue.get_plan(team, detail.plan.id).await.unwrap();
    assert_eq!(got.plan.state, PlanState::Running);
    let states = plan_states(&h.queue, team, &got).await;
    assert_eq!(states["build"], TaskState::Queued);
    assert_eq!(states["test"], TaskState::Blocked);
    assert_eq!(states["deploy"], TaskState::Blocked);
    assert_eq!(states["docs"], TaskState::Queued);
    for want in [2, 1, 1] {
        let leased = lease(&h.queue, 10).await;
        assert_eq!(
            leased.len(),
            want,
            "one task of the chain is ready at a time"
        );
        for l in leased {
            h.queue
                .complete(l.task.id, l.epoch, json!({}))
                .await
                .unwrap();
        }
    }
    let got = h.queue.get_plan(team, detail.plan.id).await.unwrap();
    assert_eq!(got.plan.state, PlanState::Succeeded);
    assert!(
        h.outbox()
            .await
            .last()
            .unwrap()
            .0
            .ends_with(&format!("{team}.plan.succeeded"))
    );

    // Cancelling a plan task cancels what depends on it.
    let (second, _) = h
        .queue
        .submit_plan(
            team,
            plan_of(
                "second",
                vec![
                    PlanTask::new("a", task(5)),
                    PlanTask::new("b", task(6)).after(["a"]),
                ],
            ),
        )
        .await
        .unwrap();
    h.queue
        .cancel(team, keyed(&second, "a"), "not needed")
        .await
        .unwrap();
    let got = h.queue.get_plan(team, second.plan.id).await.unwrap();
    assert_eq!(got.plan.state, PlanState::Cancelled);
    assert!(
        got.tasks
            .iter()
            .all(|t| t.task.state == TaskState::Cancelled)
    );
    h.finish().await;
}

/// CancelPlan cancels every unfinished task (blocked, queued, leased, running) with
/// the reason, leaves finished ones alone, publishes the plan's end, and is
/// idempotent; another team's plan is not found.
async fn cancel_plan_cancels_every_unfinished_task(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let (detail, _) = h
        .queue
        .submit_plan(
            team,
            plan_of(
                "whole",
                vec![
                    PlanTask::new("done", task(1)),
                    PlanTask::new("running", task(2)),
                    PlanTask::new("queued", task(3)).after(["done"]),
                    PlanTask::new("blocked", task(4)).after(["queued"]),
                ],
            ),
        )
        .await
        .unwrap();
    let plan = detail.plan.id;
    let leased = lease(&h.queue, 10).await;
    assert_eq!(leased.len(), 2);
    let done = keyed(&detail, "done");
    let running = leased.iter().find(|l| l.task.id != done).unwrap();
    let first = leased.iter().find(|l| l.task.id == done).unwrap();
    h.queue
        .complete(done, first.epoch, json!({}))
        .await
        .unwrap();
    h.queue
        .heartbeat(running.task.id, running.epoch, Duration::from_secs(30))
        .await
        .unwrap();

    let err = h
        .queue
        .cancel_plan(TeamId::new(), plan, "x")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);

    let cancelled = h.queue.cancel_plan(team, plan, "stop it").await.unwrap();
    assert_eq!(cancelled.state, PlanState::Cancelled);
    assert_eq!(
        (cancelled.succeeded_count, cancelled.cancelled_count),
        (1, 3)
    );
    let states = plan_states(&h.queue, team, &h.queue.get_plan(team, plan).await.unwrap()).await;
    assert_eq!(states["done"], TaskState::Succeeded);
    for key in ["running", "queued", "blocked"] {
        assert_eq!(states[key], TaskState::Cancelled, "{key}");
    }
    let got = h.queue.get(team, running.task.id).await.unwrap();
    assert_eq!(got.last_error.as_deref(), Some("stop it"));
    // The running task's lease is useless now.
    assert!(
        h.queue
            .heartbeat(running.task.id, running.epoch, Duration::from_secs(30))
            .await
            .is_err()
    );
    let rows = h.outbox().await;
    let last = &rows.last().unwrap().0;
    assert!(last.ends_with(&format!("{team}.plan.cancelled")), "{last}");
    let event = godel_proto::cloudevent::decode::<PlanEvent>(&rows.last().unwrap().1)
        .unwrap()
        .data;
    assert_eq!(event.reason, "stop it");

    // Again: nothing changes.
    let before = h.outbox().await.len();
    let again = h.queue.cancel_plan(team, plan, "again").await.unwrap();
    assert_eq!(again.state, PlanState::Cancelled);
    assert_eq!(h.outbox().await.len(), before);
    h.finish().await;
}

async fn plan_validation_and_idempotency(kind: Kind) {
    let config = QueueConfig {
        max_plan_tasks: 3,
        ..QueueConfig::default()
    };
    let h = Harness::with_config(kind, config).await;
    let team = TeamId::new();
    let cases = [
        (
            vec![
                PlanTask::new("a", task(1)).after(["c"]),
                PlanTask::new("b", task(2)).after(["a"]),
                PlanTask::new("c", task(3)).after(["b"]),
            ],
            "cycle",
        ),
        (
            vec![
                PlanTask::new("a", task(1)),
                PlanTask::new("b", task(2)).after(["nope"]),
            ],
            "tasks[1].depends_on[0]",
        ),
        (
            vec![PlanTask::new("a", task(1)).after(["a"])],
            "tasks[0].depends_on[0]",
        ),
        (
            vec![PlanTask::new("a", task(1)), PlanTask::new("a", task(2))],
            "tasks[1].key",
        ),
        (
            (0..4)
                .map(|i| PlanTask::new(format!("t{i}"), task(i)))
                .collect(),
            "tasks",
        ),
        (vec![], "tasks"),
        (
            vec![PlanTask::new("a", task(1).priority(0))],
            "tasks[0].task.priority",
        ),
        (
            vec![PlanTask::new("a", task(1).idempotency_key("k"))],
            "tasks[0].task.idempotency_key",
        ),
    ];
    for (tasks, field) in cases {
        let err = h
            .queue
            .submit_plan(team, plan_of("bad", tasks))
            .await
            .unwrap_err();
        assert_eq!(code(&err), ErrorCode::InvalidArgument, "{err:?}");
        let got = err.field.as_deref().unwrap();
        if field == "cycle" {
            assert!(got.ends_with("].depends_on"), "{err:?}");
            assert!(err.message.contains("cycle"), "{err:?}");
            assert!(
                ["\"a\"", "\"b\"", "\"c\""]
                    .iter()
                    .all(|k| err.message.contains(k)),
                "{err:?}"
            );
        } else {
            assert_eq!(got, field, "{err:?}");
        }
    }
    assert!(
        h.queue
            .list(team, ListTasks::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let keyed_plan = |n: usize| NewPlan {
        idempotency_key: Some("release-1".to_owned()),
        ..plan_of(
            "release",
            vec![
                PlanTask::new("a", task(n)),
                PlanTask::new("b", task(2)).after(["a"]),
            ],
        )
    };
    let (first, created) = h.queue.submit_plan(team, keyed_plan(1)).await.unwrap();
    assert!(created);
    let (again, created) = h.queue.submit_plan(team, keyed_plan(1)).await.unwrap();
    assert!(!created);
    assert_eq!(again.plan.id, first.plan.id);
    assert_eq!(again.tasks.len(), 2);
    let err = h.queue.submit_plan(team, keyed_plan(9)).await.unwrap_err();
    assert_eq!(code(&err), ErrorCode::Conflict, "{err:?}");
    assert_eq!(err.field.as_deref(), Some("idempotency_key"));
    assert_eq!(
        h.queue
            .list(team, ListTasks::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let err = h
        .queue
        .get_plan(TeamId::new(), first.plan.id)
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::NotFound, "team scopes plans");
    h.finish().await;
}

fn registration(capacity: u32) -> Registration {
    Registration {
        id: OrchestratorId::new(),
        capacity,
        runtimes: vec!["process".to_owned()],
        labels: [("zone".to_owned(), "a".to_owned())].into(),
        endpoint: "http://127.0.0.1:1".to_owned(),
        version: "test".to_owned(),
    }
}

async fn orchestrator_registry_places_on_least_loaded(kind: Kind) {
    let h = Harness::new(kind).await;
    let registry = Registry::new(h.db.clone(), Duration::from_secs(60));
    let a = registry.register(registration(2)).await.unwrap();
    let b = registry.register(registration(3)).await.unwrap();
    assert!(a.healthy && b.healthy);
    assert_eq!(
        (a.load, a.runtimes.clone()),
        (0, vec!["process".to_owned()])
    );
    assert_eq!(a.labels.get("zone").map(String::as_str), Some("a"));
    let team = TeamId::new();
    h.queue
        .submit_batch(team, (0..6).map(task).collect())
        .await
        .unwrap();
    // `a` takes two tasks: `b` is the least loaded.
    let held = h.queue.lease(a.id, 2, LEASE).await.unwrap();
    assert_eq!(registry.get(a.id).await.unwrap().load, 2);
    assert_eq!(registry.place(1).await.unwrap().unwrap().id, b.id);
    h.queue.lease(b.id, 3, LEASE).await.unwrap();
    // Both full.
    assert_eq!(registry.place(1).await.unwrap(), None);
    h.queue
        .complete(held[0].task.id, held[0].epoch, json!({}))
        .await
        .unwrap();
    let placed = registry.place(1).await.unwrap().unwrap();
    assert_eq!((placed.id, placed.load, placed.free()), (a.id, 1, 1));
    assert_eq!(registry.place(2).await.unwrap(), None);
    // Draining (or unknown) instances get nothing.
    assert!(registry.heartbeat(a.id, 2, 1, true).await.unwrap());
    assert_eq!(registry.place(1).await.unwrap(), None);
    assert!(
        !registry
            .heartbeat(OrchestratorId::new(), 1, 0, false)
            .await
            .unwrap()
    );
    // Re-registering updates what the instance said.
    let again = registry
        .register(Registration {
            capacity: 5,
            ..registration(0)
        })
        .await
        .unwrap();
    assert_eq!(registry.list().await.unwrap().len(), 3);
    assert_eq!(registry.place(5).await.unwrap().unwrap().id, again.id);
    let err = registry
        .register(Registration {
            runtimes: vec![String::new()],
            ..registration(1)
        })
        .await
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("runtimes[0]"), "{err:?}");
    h.finish().await;
}

async fn silent_orchestrators_are_unhealthy(kind: Kind) {
    let h = Harness::new(kind).await;
    let registry = Registry::new(h.db.clone(), Duration::from_millis(300));
    let a = registry.register(registration(4)).await.unwrap();
    assert_eq!(registry.place(1).await.unwrap().map(|o| o.id), Some(a.id));
    eventually("the instance to become unhealthy", WAIT, || async {
        (!registry.get(a.id).await.unwrap().healthy).then_some(())
    })
    .await;
    assert_eq!(registry.place(1).await.unwrap(), None);
    assert!(registry.heartbeat(a.id, 4, 0, false).await.unwrap());
    let back = registry.get(a.id).await.unwrap();
    assert!(back.healthy);
    assert!(back.last_heartbeat > a.last_heartbeat);
    assert_eq!(registry.place(1).await.unwrap().map(|o| o.id), Some(a.id));
    h.finish().await;
}

async fn queue_stats_behind_the_gauges(kind: Kind) {
    let config = QueueConfig {
        retry_backoff_base: Duration::from_secs(600),
        retry_backoff_max: Duration::from_secs(600),
        ..QueueConfig::default()
    };
    let h = Harness::with_config(kind, config).await;
    let (a, b, c) = (TeamId::new(), TeamId::new(), TeamId::new());
    h.queue
        .submit_batch(a, (0..4).map(task).collect())
        .await
        .unwrap();
    let leased = lease(&h.queue, 2).await;
    h.queue
        .heartbeat(leased[0].task.id, leased[0].epoch, LEASE)
        .await
        .unwrap();
    h.queue
        .submit_plan(
            b,
            plan_of(
                "p",
                vec![
                    PlanTask::new("x", task(1).max_attempts(1)),
                    PlanTask::new("y", task(2)).after(["x"]),
                ],
            ),
        )
        .await
        .unwrap();
    // `c`'s only queued task waits for its backoff: not runnable, so no age.
    let t = h.queue.submit(c, task(9)).await.unwrap();
    let stats = h.queue.stats().await.unwrap();
    assert_eq!(stats.count(a, TaskState::Queued), 2);
    assert_eq!(stats.count(a, TaskState::Leased), 1);
    assert_eq!(stats.count(a, TaskState::Running), 1);
    assert_eq!(stats.count(b, TaskState::Queued), 1);
    assert_eq!(stats.count(b, TaskState::Blocked), 1);
    let x = lease(&h.queue, 10).await;
    let c_lease = x.iter().find(|l| l.task.id == t.id).unwrap();
    h.queue
        .fail(t.id, c_lease.epoch, "flaky", true)
        .await
        .unwrap();
    let bx = x.iter().find(|l| l.task.team_id == b).unwrap();
    h.queue
        .fail(bx.task.id, bx.epoch, "broken", true)
        .await
        .unwrap();
    let stats = h.queue.stats().await.unwrap();
    assert_eq!(stats.count(b, TaskState::DeadLettered), 1);
    assert_eq!(stats.count(b, TaskState::Blocked), 0);
    assert_eq!(stats.count(b, TaskState::Queued), 0);
    assert_eq!(stats.count(c, TaskState::Queued), 1);
    assert_eq!(stats.count(a, TaskState::Leased), 3, "{stats:?}");
    assert!(!stats.oldest_queued.contains_key(&c), "{stats:?}");
    assert!(!stats.oldest_queued.contains_key(&b), "{stats:?}");
    // `a`'s queued tasks age with the database clock.
    h.queue.submit(a, task(5)).await.unwrap();
    eventually("the oldest queued task to age", WAIT, || async {
        let stats = h.queue.stats().await.unwrap();
        stats
            .oldest_queued
            .get(&a)
            .filter(|age| **age >= Duration::from_millis(200))
            .map(|_| ())
    })
    .await;
    h.finish().await;
}

/// Several claimers on their own pools race over a few hundred tasks: each task is
/// leased exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_task() {
    let h = Harness::new(Kind::Postgres).await;
    let teams = [TeamId::new(), TeamId::new(), TeamId::new()];
    for (i, team) in teams.iter().enumerate() {
        h.queue
            .submit_batch(*team, (0..100).map(|n| task(n + i * 1000)).collect())
            .await
            .unwrap();
    }
    let mut handles = Vec::new();
    for _ in 0..5 {
        let q = h.replica().await;
        handles.push(tokio::spawn(async move {
            let me = OrchestratorId::new();
            let mut mine = Vec::new();
            loop {
                let got = q.lease(me, 7, LEASE).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|l| (l.task.id, l.epoch)));
            }
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    assert_eq!(all.len(), 300);
    let unique: HashSet<TaskId> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique.len(), 300, "a task was leased twice");
    assert!(all.iter().all(|(_, epoch)| *epoch == 1));
    h.finish().await;
}

/// Replicas complete the many dependencies of one task concurrently: whichever
/// commits last queues it, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_completions_unblock_a_dependent_once() {
    let h = Harness::new(Kind::Postgres).await;
    let team = TeamId::new();
    let roots: Vec<String> = (0..24).map(|i| format!("r{i}")).collect();
    let mut tasks: Vec<PlanTask> = roots
        .iter()
        .enumerate()
        .map(|(i, k)| PlanTask::new(k.clone(), task(i)))
        .collect();
    tasks.push(PlanTask::new("sink", task(99)).after(roots.iter().cloned()));
    let (detail, _) = h
        .queue
        .submit_plan(team, plan_of("fan-in", tasks))
        .await
        .unwrap();
    let sink = keyed(&detail, "sink");
    let leased = lease(&h.queue, 100).await;
    assert_eq!(leased.len(), 24);
    // Each replica completes its share in one transaction, all at once.
    let start = Arc::new(tokio::sync::Barrier::new(6));
    let mut handles = Vec::new();
    for chunk in leased.chunks(4) {
        let q = h.replica().await;
        let start = start.clone();
        let completions: Vec<Completion> = chunk
            .iter()
            .map(|l| Completion {
                task_id: l.task.id,
                epoch: l.epoch,
                result: json!({}),
                owner: None,
            })
            .collect();
        handles.push(tokio::spawn(async move {
            start.wait().await;
            let outcomes = q.complete_many(completions).await.unwrap();
            assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(
        h.queue.get(team, sink).await.unwrap().state,
        TaskState::Queued
    );
    let sink_queued = h
        .outbox()
        .await
        .iter()
        .filter(|(s, _)| s.ends_with(".task.queued"))
        .map(|(_, p)| {
            godel_proto::cloudevent::decode::<TaskEvent>(p)
                .unwrap()
                .data
        })
        .filter(|e| e.task_id == sink.to_string())
        .count();
    assert_eq!(sink_queued, 1);
    assert_eq!(lease_and_complete(&h.queue, 1).await, vec![sink]);
    let rows = h.outbox().await;
    let finished = rows
        .iter()
        .filter(|(s, _)| s.ends_with(".plan.succeeded"))
        .count();
    assert_eq!(finished, 1);
    h.finish().await;
}

/// The service's own sweeper (a background task of `start`) requeues an expired lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_sweeps_expired_leases() {
    let test_db = TestDb::sqlite();
    let mut config = godel_scheduler::SchedulerConfig {
        database: DatabaseConfig {
            url: test_db.url.clone().into(),
            schema: None,
            ..DatabaseConfig::default()
        },
        ..godel_scheduler::SchedulerConfig::default()
    };
    config.server.http_addr = "127.0.0.1:0".parse().unwrap();
    config.server.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.queue.sweep_interval = Duration::from_millis(50);
    // A second SQLite connection writes below; only the sweeper writes in the service.
    config.queue.dispatch = false;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let deps = godel_scheduler::Dependencies {
        bus: Arc::new(MemoryBus::default()),
    };
    let running = godel_scheduler::start(config.clone(), deps, shutdown.clone())
        .await
        .unwrap();

    let db = godel_store::connect(&config.database).await.unwrap();
    let queue = queue_over(&db, config.queue.clone());
    let team = TeamId::new();
    let t = queue.submit(team, task(1)).await.unwrap();
    queue
        .lease(OrchestratorId::new(), 1, Duration::from_millis(100))
        .await
        .unwrap();
    eventually("the sweeper to requeue the task", WAIT, || async {
        (queue.get(team, t.id).await.unwrap().state == TaskState::Queued).then_some(())
    })
    .await;
    shutdown.cancel();
    running.wait().await.unwrap();
}

/// Single submissions of several callers share one transaction, each in its own
/// savepoint: a refused one gets its own error and leaves the others alone.
async fn grouped_submissions_fail_alone(kind: Kind) {
    let h = Harness::with_config(
        kind,
        QueueConfig {
            max_queued_per_team: 2,
            ..QueueConfig::default()
        },
    )
    .await;
    let (a, b) = (TeamId::new(), TeamId::new());
    let existing = h
        .queue
        .submit(a, task(0).idempotency_key("k"))
        .await
        .unwrap();
    let outcomes = h
        .queue
        .submit_group(vec![
            (a, task(1)),
            (a, task(2).idempotency_key("k")),
            (b, NewTask::new("", json!({}))),
            (a, task(0).idempotency_key("k")),
            (a, task(3)),
            (b, task(4)),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 6);
    let created = outcomes[0].as_ref().unwrap();
    assert!(created.created);
    assert_eq!(code(outcomes[1].as_ref().unwrap_err()), ErrorCode::Conflict);
    let invalid = outcomes[2].as_ref().unwrap_err();
    assert_eq!(code(invalid), ErrorCode::InvalidArgument);
    assert_eq!(
        invalid.field.as_deref(),
        Some("task.task_type"),
        "{invalid:?}"
    );
    let again = outcomes[3].as_ref().unwrap();
    assert_eq!((again.task.id, again.created), (existing.id, false));
    assert_eq!(
        code(outcomes[4].as_ref().unwrap_err()),
        ErrorCode::ResourceExhausted,
        "team a holds two queued tasks: its limit"
    );
    assert!(outcomes[5].as_ref().unwrap().created);

    let stats = h.queue.stats().await.unwrap();
    assert_eq!(stats.count(a, TaskState::Queued), 2);
    assert_eq!(stats.count(b, TaskState::Queued), 1);
    let submitted_events = h
        .outbox()
        .await
        .iter()
        .filter(|(s, _)| s.ends_with(".task.queued"))
        .count();
    assert_eq!(submitted_events, 3, "one event per task created");
    h.finish().await;
}

/// One `#[tokio::test]` per case in a module named after the backend.
async fn labels_profile_and_not_before(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let profile = ProfileId::new();
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let waiting = h
        .queue
        .submit(
            team,
            task(1)
                .label("repo", "web")
                .profile(profile)
                .not_before(later),
        )
        .await
        .unwrap();
    let got = h.queue.get(team, waiting.id).await.unwrap();
    assert_eq!(got.labels.get("repo").map(String::as_str), Some("web"));
    assert_eq!(got.profile_id, Some(profile));
    assert!(got.not_before >= later - chrono::Duration::milliseconds(1));
    assert!(
        lease(&h.queue, 10).await.is_empty(),
        "leased before not_before"
    );
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    let ready = h
        .queue
        .submit(team, task(2).not_before(past))
        .await
        .unwrap();
    assert!(
        ready.not_before > past,
        "a past not_before is clamped to now"
    );
    let leased = lease(&h.queue, 10).await;
    assert_eq!(
        leased.iter().map(|l| l.task.id).collect::<Vec<_>>(),
        vec![ready.id]
    );
    assert_eq!(got.labels.len(), 1);
    assert_eq!(leased[0].task.profile_id, None);
    assert!(leased[0].task.labels.is_empty());

    // A plan task keeps its not_before when its dependency succeeds.
    let detail = h
        .queue
        .submit_plan(
            team,
            plan_of(
                "later",
                vec![
                    PlanTask::new("a", task(3)),
                    PlanTask::new("b", task(4).not_before(later)).after(["a"]),
                ],
            ),
        )
        .await
        .unwrap()
        .0;
    let a = lease(&h.queue, 10).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].task.id, keyed(&detail, "a"));
    h.queue
        .complete(a[0].task.id, a[0].epoch, json!({}))
        .await
        .unwrap();
    let b = h.queue.get(team, keyed(&detail, "b")).await.unwrap();
    assert_eq!(b.state, TaskState::Queued);
    assert!(b.not_before >= later - chrono::Duration::milliseconds(1));
    assert!(
        lease(&h.queue, 10).await.is_empty(),
        "b leased before not_before"
    );

    let err = h
        .queue
        .submit(team, task(5).label(" ", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("task.labels"));
    let mut many = task(6);
    for i in 0..=MAX_LABELS {
        many = many.label(format!("k{i}"), "v");
    }
    let err = h.queue.submit(team, many).await.unwrap_err();
    assert_eq!(err.field.as_deref(), Some("task.labels"));
    h.finish().await;
}

async fn list_filters_by_plan_and_type(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let lone = h
        .queue
        .submit(team, NewTask::new("lint", json!({})))
        .await
        .unwrap();
    let detail = h
        .queue
        .submit_plan(
            team,
            plan_of(
                "p",
                vec![PlanTask::new("a", task(1)), PlanTask::new("b", task(2))],
            ),
        )
        .await
        .unwrap()
        .0;
    let ids = |page: godel_scheduler::queue::Page<godel_scheduler::queue::Task>| {
        page.items.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    let of_plan = h
        .queue
        .list(
            team,
            ListTasks {
                plan_id: Some(detail.plan.id),
                ..ListTasks::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(of_plan), vec![keyed(&detail, "a"), keyed(&detail, "b")]);
    let of_type = h
        .queue
        .list(
            team,
            ListTasks {
                task_type: Some("lint".into()),
                ..ListTasks::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(of_type), vec![lone.id]);
    let none = h
        .queue
        .list(
            team,
            ListTasks {
                plan_id: Some(detail.plan.id),
                task_type: Some("lint".into()),
                ..ListTasks::default()
            },
        )
        .await
        .unwrap();
    assert!(none.items.is_empty());
    h.finish().await;
}

async fn failure_retry_after_is_a_floor(kind: Kind) {
    let h = Harness::new(kind).await;
    let team = TeamId::new();
    let t = h.queue.submit(team, task(1)).await.unwrap();
    let l = lease(&h.queue, 1).await.remove(0);
    let before = chrono::Utc::now();
    let outcome = h
        .queue
        .fail_with(
            t.id,
            l.epoch,
            Failure {
                code: "rate_limited",
                message: "rate limited",
                retryable: true,
                retry_after: Some(Duration::from_secs(3600)),
            },
        )
        .await
        .unwrap();
    let FailOutcome::Retrying { not_before } = outcome else {
        panic!("expected a retry, got {outcome:?}");
    };
    assert!(not_before >= before + chrono::Duration::seconds(3599));
    assert!(
        lease(&h.queue, 1).await.is_empty(),
        "leased before retry_after"
    );
    let err = h
        .queue
        .fail_with(
            t.id,
            l.epoch,
            Failure {
                code: &"x".repeat(MAX_ERROR_CODE_LEN + 1),
                message: "m",
                retryable: true,
                retry_after: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("code"));
    h.finish().await;
}

macro_rules! cases {
    ($module:ident => $kind:ident: $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::$kind).await;
                }
            )*
        }
    };
}

cases!(sqlite => Sqlite:
    idempotent_submission,
    concurrent_submissions_of_one_key_return_one_task,
    validation_names_the_field,
    backpressure,
    wfq_shares_follow_weights,
    idle_team_gets_no_burst,
    priority_then_fifo,
    concurrency_limit_per_team,
    fencing_and_expired_leases,
    expired_lease_past_attempts_is_dead_lettered,
    complete_many_in_one_batch,
    grouped_submissions_fail_alone,
    retry_backoff_and_dead_letters,
    cancel_and_list,
    every_change_writes_an_event,
    diamond_plan_readiness,
    plan_failure_cancels_dependents,
    cancel_plan_cancels_every_unfinished_task,
    plan_validation_and_idempotency,
    orchestrator_registry_places_on_least_loaded,
    silent_orchestrators_are_unhealthy,
    queue_stats_behind_the_gauges,
    labels_profile_and_not_before,
    list_filters_by_plan_and_type,
    failure_retry_after_is_a_floor,
);

cases!(postgres => Postgres:
    idempotent_submission,
    concurrent_submissions_of_one_key_return_one_task,
    validation_names_the_field,
    backpressure,
    wfq_shares_follow_weights,
    idle_team_gets_no_burst,
    priority_then_fifo,
    concurrency_limit_per_team,
    fencing_and_expired_leases,
    expired_lease_past_attempts_is_dead_lettered,
    complete_many_in_one_batch,
    grouped_submissions_fail_alone,
    retry_backoff_and_dead_letters,
    cancel_and_list,
    every_change_writes_an_event,
    diamond_plan_readiness,
    plan_failure_cancels_dependents,
    cancel_plan_cancels_every_unfinished_task,
    plan_validation_and_idempotency,
    orchestrator_registry_places_on_least_loaded,
    silent_orchestrators_are_unhealthy,
    queue_stats_behind_the_gauges,
    labels_profile_and_not_before,
    list_filters_by_plan_and_type,
    failure_retry_after_is_a_floor,
);
