//! The bus conformance suite: every case runs against the in-process bus and against
//! NATS JetStream (a real server, see `godel_test_utils::nats`), each on a fresh bus
//! with its own stream and subject prefix.

// The case bodies are shared test code outside `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use godel_bus::{
    Bus, BusConfig, BusKind, Consumer, ConsumerConfig, Delivery, Headers, OutgoingMessage, Subject,
};
use godel_test_utils::eventually;
use godel_test_utils::nats::TestNats;
use godel_types::{OrchestratorId, TeamId};

/// Generous bound for something that should happen promptly.
const PROMPT: Duration = Duration::from_secs(10);
/// Short ack wait so redelivery cases run quickly.
const SHORT_ACK_WAIT: Duration = Duration::from_millis(400);

fn memory_bus() -> Arc<dyn Bus> {
    Arc::new(godel_bus::MemoryBus::default())
}

async fn nats_bus() -> (Arc<dyn Bus>, TestNats) {
    let nats = TestNats::new().await;
    let mut config = BusConfig::nats(&nats.url, &nats.stream_name, &nats.subject_prefix);
    config.max_age = Duration::from_secs(3600);
    let bus = godel_bus::connect(&config).await.expect("connect to NATS");
    (bus, nats)
}

fn message(id: &str, subject: Subject, payload: &str) -> OutgoingMessage {
    OutgoingMessage {
        id: id.to_owned(),
        subject,
        headers: Headers::new(),
        payload: Bytes::from(payload.to_owned()),
    }
}

fn consumer_config(name: &str, filters: &[&str], ack_wait: Duration) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(name, filters.iter().map(|f| (*f).to_owned()).collect());
    config.ack_wait = ack_wait;
    config
}

/// The next delivery; fails the test when none arrives within `PROMPT`.
async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(PROMPT, consumer.next())
        .await
        .expect("a delivery within the deadline")
        .expect("consumer works")
        .expect("bus is open")
}

/// Publishes a marker on `subject` and checks it is the very next delivery: whatever
/// the consumer would have wrongly delivered before it (published earlier, or due
/// for immediate redelivery) would have come first.
async fn assert_next_is_marker(
    bus: &Arc<dyn Bus>,
    consumer: &mut Box<dyn Consumer>,
    subject: Subject,
) {
    let id = format!("marker-{}", uuid_like());
    bus.publish(message(&id, subject, "marker")).await.unwrap();
    let d = next(consumer).await;
    assert_eq!(d.id, id, "expected the marker, got {d:?}");
    d.ack().await.unwrap();
}

fn uuid_like() -> String {
    godel_test_utils::unique_name("m")
}

async fn publish_then_consume_then_ack(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let mut consumer = bus
        .consumer(consumer_config(
            "worker",
            &[&Subject::team_events(team)],
            PROMPT,
        ))
        .await
        .unwrap();
    let ack = bus
        .publish(message("evt-1", Subject::task(team, "queued"), "hello"))
        .await
        .unwrap();
    assert!(!ack.duplicate);
    assert!(ack.sequence >= 1);

    let d = next(&mut consumer).await;
    assert_eq!(d.id, "evt-1");
    assert_eq!(d.subject, Subject::task(team, "queued"));
    assert_eq!(d.payload, Bytes::from_static(b"hello"));
    assert_eq!(d.delivery_count, 1);
    assert_eq!(d.sequence, ack.sequence);
    d.ack().await.unwrap();
    bus.check().await.unwrap();
}

async fn unacked_is_redelivered_after_ack_wait(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let mut consumer = bus
        .consumer(consumer_config("worker", &[], SHORT_ACK_WAIT))
        .await
        .unwrap();
    bus.publish(message("evt-1", Subject::task(team, "queued"), "x"))
        .await
        .unwrap();
    let first = next(&mut consumer).await;
    assert_eq!((first.id.as_str(), first.delivery_count), ("evt-1", 1));
    drop(first); // neither acked nor nak'ed

    let again = next(&mut consumer).await;
    assert_eq!((again.id.as_str(), again.delivery_count), ("evt-1", 2));
    again.ack().await.unwrap();
    assert_next_is_marker(&bus, &mut consumer, Subject::task(team, "marker")).await;
}

async fn nak_is_redelivered(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    // A long ack wait: only the nak can cause the prompt redeliveries below.
    let mut consumer = bus
        .consumer(consumer_config("worker", &[], Duration::from_secs(60)))
        .await
        .unwrap();
    bus.publish(message("evt-1", Subject::task(team, "queued"), "x"))
        .await
        .unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(first.delivery_count, 1);
    first.nak(None).await.unwrap();

    let second = next(&mut consumer).await;
    assert_eq!((second.id.as_str(), second.delivery_count), ("evt-1", 2));
    let naked_at = std::time::Instant::now();
    second.nak(Some(Duration::from_millis(300))).await.unwrap();

    let third = next(&mut consumer).await;
    assert_eq!((third.id.as_str(), third.delivery_count), ("evt-1", 3));
    assert!(
        naked_at.elapsed() >= Duration::from_millis(250),
        "a nak with a delay is redelivered after the delay"
    );
    third.ack().await.unwrap();
}

async fn duplicate_ids_are_stored_once(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let mut consumer = bus
        .consumer(consumer_config("worker", &[], PROMPT))
        .await
        .unwrap();
    let first = bus
        .publish(message("evt-1", Subject::task(team, "queued"), "x"))
        .await
        .unwrap();
    let second = bus
        .publish(message("evt-1", Subject::task(team, "queued"), "x"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.sequence, first.sequence);

    let d = next(&mut consumer).await;
    assert_eq!(d.id, "evt-1");
    d.ack().await.unwrap();
    assert_next_is_marker(&bus, &mut consumer, Subject::task(team, "marker")).await;
}

async fn ordered_per_subject(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let subjects = [
        Subject::task(team, "queued"),
        Subject::session(team, "started"),
        Subject::plan(team, "done"),
    ];
    let mut consumer = bus
        .consumer(consumer_config(
            "worker",
            &[&Subject::team_events(team)],
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    let total = 300;
    for i in 0..total {
        let subject = subjects[i % subjects.len()].clone();
        bus.publish(message(&format!("evt-{i}"), subject, &i.to_string()))
            .await
            .unwrap();
    }
    let mut seen: BTreeMap<Subject, Vec<usize>> = BTreeMap::new();
    for _ in 0..total {
        let d = next(&mut consumer).await;
        assert_eq!(d.delivery_count, 1);
        let i: usize = std::str::from_utf8(&d.payload).unwrap().parse().unwrap();
        seen.entry(d.subject.clone()).or_default().push(i);
        d.ack().await.unwrap();
    }
    for (index, subject) in subjects.iter().enumerate() {
        let expected: Vec<usize> = (0..total).filter(|i| i % subjects.len() == index).collect();
        assert_eq!(seen[subject], expected, "order of {subject}");
    }
}

async fn recreated_durable_resumes_after_last_ack(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let config = consumer_config("resumer", &[&Subject::team_events(team)], SHORT_ACK_WAIT);
    let mut consumer = bus.consumer(config.clone()).await.unwrap();
    for i in 1..=4 {
        bus.publish(message(
            &format!("evt-{i}"),
            Subject::task(team, "queued"),
            "x",
        ))
        .await
        .unwrap();
    }
    for expected in ["evt-1", "evt-2"] {
        let d = next(&mut consumer).await;
        assert_eq!(d.id, expected);
        d.ack().await.unwrap();
    }
    let unacked = next(&mut consumer).await;
    assert_eq!(unacked.id, "evt-3");
    drop(unacked);
    drop(consumer);

    let mut consumer = bus.consumer(config).await.unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        let d = next(&mut consumer).await;
        assert!(
            d.id == "evt-3" || d.id == "evt-4",
            "acked messages are not delivered again, got {d:?}"
        );
        if d.id == "evt-3" {
            assert!(d.delivery_count >= 2, "evt-3 was delivered before: {d:?}");
        }
        seen.insert(d.id.clone());
        d.ack().await.unwrap();
    }
    assert_next_is_marker(&bus, &mut consumer, Subject::task(team, "marker")).await;
}

async fn filters_with_wildcards(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let other = TeamId::new();
    let orchestrator = OrchestratorId::new();
    let task_filter = format!("godel.v1.team.{team}.task.*");
    let dispatch_filter = "godel.v1.dispatch.>".to_owned();
    let mut tasks_and_dispatch = bus
        .consumer(consumer_config(
            "tasks",
            &[&task_filter, &dispatch_filter],
            PROMPT,
        ))
        .await
        .unwrap();
    let mut sessions = bus
        .consumer(consumer_config(
            "sessions",
            &["godel.v1.team.*.session.*"],
            PROMPT,
        ))
        .await
        .unwrap();

    bus.publish(message("a", Subject::session(team, "started"), "x"))
        .await
        .unwrap();
    bus.publish(message("b", Subject::task(other, "queued"), "x"))
        .await
        .unwrap();
    bus.publish(message("c", Subject::task(team, "queued"), "x"))
        .await
        .unwrap();
    bus.publish(message("d", Subject::dispatch(orchestrator), "x"))
        .await
        .unwrap();
    bus.publish(message("e", Subject::session(other, "stopped"), "x"))
        .await
        .unwrap();

    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let d = next(&mut tasks_and_dispatch).await;
        got.insert(d.id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(got, BTreeSet::from(["c".to_owned(), "d".to_owned()]));
    assert_next_is_marker(&bus, &mut tasks_and_dispatch, Subject::task(team, "marker")).await;

    let first = next(&mut sessions).await;
    assert_eq!(first.id, "a");
    first.ack().await.unwrap();
    let second = next(&mut sessions).await;
    assert_eq!(second.id, "e");
    second.ack().await.unwrap();
    assert_next_is_marker(&bus, &mut sessions, Subject::session(team, "marker")).await;

    // Overlapping filters are rejected by both buses.
    let overlapping = bus
        .consumer(consumer_config(
            "bad",
            &["godel.v1.team.>", &task_filter],
            PROMPT,
        ))
        .await;
    assert!(overlapping.is_err());
}

async fn max_deliver_stops_redelivery(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let mut config = consumer_config("worker", &[], SHORT_ACK_WAIT);
    config.max_deliver = Some(2);
    let mut consumer = bus.consumer(config).await.unwrap();
    bus.publish(message("poison", Subject::task(team, "queued"), "x"))
        .await
        .unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(first.delivery_count, 1);
    first.nak(None).await.unwrap();
    let second = next(&mut consumer).await;
    assert_eq!((second.id.as_str(), second.delivery_count), ("poison", 2));
    // An immediate nak: were a third delivery allowed, it would come before the marker.
    second.nak(None).await.unwrap();
    assert_next_is_marker(&bus, &mut consumer, Subject::task(team, "marker")).await;

    // And nothing comes after the ack wait either. Asserting an absence needs a
    // bounded wait: three ack waits.
    let late = tokio::time::timeout(SHORT_ACK_WAIT * 3, consumer.next()).await;
    assert!(late.is_err(), "no delivery after max_deliver, got {late:?}");
}

async fn headers_survive(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let mut consumer = bus
        .consumer(consumer_config("worker", &[], PROMPT))
        .await
        .unwrap();
    let mut msg = message("evt-1", Subject::task(team, "queued"), "{}");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    msg.headers
        .insert("traceparent".to_owned(), traceparent.to_owned());
    msg.headers
        .insert("ce-type".to_owned(), "godel.task.queued.v1".to_owned());
    msg.headers.insert(
        "Content-Type".to_owned(),
        "application/cloudevents+json".to_owned(),
    );
    bus.publish(msg.clone()).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.headers, msg.headers);
    d.ack().await.unwrap();

    // Reserved header names are refused rather than silently dropped.
    let mut reserved = message("evt-2", Subject::task(team, "queued"), "{}");
    reserved
        .headers
        .insert("Nats-Msg-Id".to_owned(), "x".to_owned());
    assert!(bus.publish(reserved).await.is_err());
}

/// `publish_all` stores a batch in order, and a message that cannot be published ends
/// the list: the ones before it are stored, nothing after it is reported published.
async fn publish_all_keeps_order_and_stops_at_a_failure(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let subject = Subject::task(team, "queued");
    let mut consumer = bus
        .consumer(consumer_config(
            "batch",
            &[&Subject::team_events(team)],
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    let batch: Vec<_> = (0..200)
        .map(|i| message(&format!("evt-{i}"), subject.clone(), &i.to_string()))
        .collect();
    let outcomes = bus.publish_all(batch).await;
    assert_eq!(outcomes.len(), 200);
    assert!(outcomes.iter().all(Result::is_ok));
    for i in 0..200 {
        let d = next(&mut consumer).await;
        assert_eq!(std::str::from_utf8(&d.payload).unwrap(), i.to_string());
        d.ack().await.unwrap();
    }

    let mut batch: Vec<_> = (200..205)
        .map(|i| message(&format!("evt-{i}"), subject.clone(), &i.to_string()))
        .collect();
    batch[2].id = "bad\nid".into();
    let outcomes = bus.publish_all(batch).await;
    assert_eq!(outcomes.len(), 3, "the list ends at the failure");
    assert!(outcomes[..2].iter().all(Result::is_ok));
    assert!(outcomes[2].is_err());
    for i in 200..202 {
        let d = next(&mut consumer).await;
        assert_eq!(std::str::from_utf8(&d.payload).unwrap(), i.to_string());
        d.ack().await.unwrap();
    }
}

async fn subscriptions_start_now_or_at_a_sequence_and_filter(bus: Arc<dyn Bus>) {
    let team = TeamId::new();
    let other = TeamId::new();
    let filter = format!("godel.v1.team.{team}.task.*");
    let before = bus
        .publish(message("before", Subject::task(team, "queued"), "0"))
        .await
        .unwrap();
    let mut now = bus.subscribe(&filter, None).await.unwrap();
    assert!(now.last_sequence >= before.sequence);
    let mut sequences = Vec::new();
    for i in 1..=3 {
        bus.publish(message(
            &format!("other-{i}"),
            Subject::task(other, "queued"),
            "x",
        ))
        .await
        .unwrap();
        let ack = bus
            .publish(message(
                &format!("m{i}"),
                Subject::task(team, "running"),
                &i.to_string(),
            ))
            .await
            .unwrap();
        sequences.push(ack.sequence);
    }
    // From now: only what came after, only this team's, in order.
    for (i, sequence) in sequences.iter().enumerate() {
        let d = next(&mut now.messages).await;
        assert_eq!(d.id, format!("m{}", i + 1));
        assert_eq!(d.sequence, *sequence);
        d.ack().await.unwrap();
    }
    // From a sequence: exactly the matching messages from it on, the earlier one too.
    let mut replay = bus.subscribe(&filter, Some(before.sequence)).await.unwrap();
    assert_eq!(next(&mut replay.messages).await.id, "before");
    let mut resumed = bus.subscribe(&filter, Some(sequences[1])).await.unwrap();
    assert_eq!(next(&mut resumed.messages).await.id, "m2");
    assert_eq!(next(&mut resumed.messages).await.id, "m3");
    // Nothing else is waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), resumed.messages.next())
            .await
            .is_err()
    );
    assert!(bus.subscribe("not.a.filter", None).await.is_err());
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::memory_bus()).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test]
                async fn $case() {
                    let (bus, nats) = super::nats_bus().await;
                    super::$case(bus).await;
                    nats.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    publish_then_consume_then_ack,
    unacked_is_redelivered_after_ack_wait,
    nak_is_redelivered,
    duplicate_ids_are_stored_once,
    ordered_per_subject,
    recreated_durable_resumes_after_last_ack,
    filters_with_wildcards,
    max_deliver_stops_redelivery,
    headers_survive,
    publish_all_keeps_order_and_stops_at_a_failure,
    subscriptions_start_now_or_at_a_sequence_and_filter,
);

#[test]
fn default_config_is_the_in_process_bus() {
    assert_eq!(BusConfig::default().kind, BusKind::Memory);
}

/// NATS only: a consumer keeps receiving after the client's connection was dropped and
/// re-established.
#[tokio::test]
async fn nats_consumer_resumes_after_reconnect() {
    let nats = TestNats::new().await;
    let config = BusConfig::nats(&nats.url, &nats.stream_name, &nats.subject_prefix);
    let bus = godel_bus::NatsBus::connect(&config).await.unwrap();
    let team = TeamId::new();
    let mut consumer = bus
        .consumer(consumer_config("worker", &[], PROMPT))
        .await
        .unwrap();
    bus.publish(message("before", Subject::task(team, "queued"), "x"))
        .await
        .unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.id, "before");
    d.ack().await.unwrap();

    let stats = bus.client().statistics();
    let connects = stats.connects.load(std::sync::atomic::Ordering::Relaxed);
    bus.client().force_reconnect().await.unwrap();
    eventually("the client reconnected", PROMPT, || {
        let now = stats.connects.load(std::sync::atomic::Ordering::Relaxed);
        let connected = bus.client().connection_state() == async_nats::connection::State::Connected;
        async move { (now > connects && connected).then_some(()) }
    })
    .await;

    bus.publish(message("after", Subject::task(team, "queued"), "x"))
        .await
        .unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.id, "after");
    d.ack().await.unwrap();
    bus.check().await.unwrap();
    nats.cleanup().await;
}

/// NATS only: `check` really asks the server, so it fails once the stream is gone.
#[tokio::test]
async fn nats_check_round_trips_to_the_server() {
    let nats = TestNats::new().await;
    let config = BusConfig::nats(&nats.url, &nats.stream_name, &nats.subject_prefix);
    let bus = godel_bus::connect(&config).await.unwrap();
    bus.check().await.unwrap();
    nats.cleanup().await;
    assert!(bus.check().await.is_err());
}

/// NATS only: connecting again updates the existing stream instead of failing.
#[tokio::test]
async fn nats_connect_updates_an_existing_stream() {
    let nats = TestNats::new().await;
    let mut config = BusConfig::nats(&nats.url, &nats.stream_name, &nats.subject_prefix);
    let first = godel_bus::connect(&config).await.unwrap();
    first
        .publish(message("kept", Subject::task(TeamId::new(), "queued"), "x"))
        .await
        .unwrap();
    config.duplicate_window = Duration::from_secs(30);
    let second = godel_bus::connect(&config).await.unwrap();
    let mut consumer = second
        .consumer(consumer_config("worker", &[], PROMPT))
        .await
        .unwrap();
    assert_eq!(next(&mut consumer).await.id, "kept");
    nats.cleanup().await;
}

/// NATS only: an unreachable server is a connect error naming the url.
#[tokio::test]
async fn nats_connect_fails_clearly_when_unreachable() {
    let mut config = BusConfig::nats("nats://127.0.0.1:1", "GODEL", "");
    config.connect_timeout = Duration::from_secs(2);
    let err = godel_bus::connect(&config)
        .await
        .err()
        .expect("connect fails");
    assert!(err.to_string().contains("nats://127.0.0.1:1"), "{err}");
}
