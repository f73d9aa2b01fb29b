//! The in-process bus: the same semantics as the NATS one, for `godel up` and tests.
//!
//! One stream log in memory, shared by every consumer:
//! - **dedup**: a message id published again within `duplicate_window` is not stored a
//!   second time and the publish reports `duplicate` with the first sequence. The
//!   dedup index is time-bounded like JetStream's and additionally capped at
//!   `max_messages` ids (oldest forgotten first). An empty id is never deduplicated.
//! - **retention** (bounded memory): the log keeps at most `max_messages` messages,
//!   at most `max_bytes` payload bytes and nothing older than `max_age`; the oldest
//!   messages are dropped first (JetStream's `DiscardPolicy::Old`). A consumer that
//!   lags behind skips what was dropped, and pending deliveries of dropped messages
//!   are forgotten.
//! - **durable consumers** are tracked by name inside the bus: the next stream
//!   sequence to deliver and the pending (delivered, not yet acked) messages with
//!   their redelivery deadline. A consumer handle recreated under the same name
//!   resumes from there; several handles with one name share the work.
//! - **redelivery**: a pending message whose `ack_wait` passed, or that was nak'ed, is
//!   delivered again (before new messages) with `delivery_count + 1`, until
//!   `max_deliver` deliveries, after which it is dropped from the consumer.
//!
//! Waiting consumers are woken through a `watch` channel bumped on publish, nak and
//! close, or by a timer set to the earliest redelivery deadline — no polling.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::BusConfig;
use crate::validate;
use crate::{
    Bus, BusError, Consumer, ConsumerConfig, Delivery, DeliveryAck, Headers, OutgoingMessage,
    PublishAck, Subject, Subscription,
};

/// Limits of the in-process stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBusConfig {
    /// Window within which a repeated message id is a duplicate.
    pub duplicate_window: Duration,
    /// Messages older than this are dropped.
    pub max_age: Duration,
    /// At most this many messages are kept (oldest dropped first).
    pub max_messages: u64,
    /// At most this many payload bytes are kept (oldest dropped first); `None` = no limit.
    pub max_bytes: Option<u64>,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        (&BusConfig::default()).into()
    }
}

impl From<&BusConfig> for MemoryBusConfig {
    fn from(c: &BusConfig) -> Self {
        Self {
            duplicate_window: c.duplicate_window,
            max_age: c.max_age,
            max_messages: c.max_messages,
            max_bytes: c.max_bytes,
        }
    }
}

/// The in-process bus. Cloning shares the stream; the bus closes (consumers' `next`
/// returns `Ok(None)`) when the last clone is dropped or on [`MemoryBus::close`].
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
    _close_on_drop: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: MemoryBusConfig,
    state: Mutex<State>,
    /// Bumped whenever a waiting consumer may have something new to do.
    changed: watch::Sender<u64>,
}

struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[derive(Default)]
struct State {
    /// Contiguous by sequence: messages are only removed from the front.
    log: VecDeque<Stored>,
    /// Sequence the next stored message gets.
    next_seq: u64,
    bytes: u64,
    dedup: HashMap<String, u64>,
    dedup_order: VecDeque<(Instant, String)>,
    consumers: HashMap<String, ConsumerState>,
    closed: bool,
}

struct Stored {
    seq: u64,
    id: String,
    subject: Subject,
    headers: Headers,
    payload: Bytes,
    stored_at: Instant,
}

struct ConsumerState {
    filters: Vec<String>,
    ack_wait: Duration,
    max_deliver: Option<u32>,
    /// Next stream sequence to consider for a first delivery.
    next_seq: u64,
    /// Delivered, not yet acked, by stream sequence.
    pending: BTreeMap<u64, Pending>,
}

struct Pending {
    deliveries: u64,
    /// When the message is due for redelivery.
    due: Instant,
}

/// What one look at the state found for a consumer.
enum Step {
    Deliver(Delivery),
    Wait(Option<Instant>),
    Closed,
}

impl MemoryBus {
    pub fn new(config: MemoryBusConfig) -> Self {
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                next_seq: 1,
                ..State::default()
            }),
            changed,
        });
        Self {
            _close_on_drop: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        }
    }

    /// Closes the bus: publishing fails with `Closed`, consumers' `next` returns `None`.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Number of messages currently kept in the stream.
    pub fn stored_messages(&self) -> usize {
        self.shared.lock().log.len()
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new(MemoryBusConfig::default())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that breaks the invariants the next user relies on, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake();
    }
}

impl State {
    fn first_seq(&self) -> u64 {
        self.log.front().map_or(self.next_seq, |m| m.seq)
    }

    fn get(&self, seq: u64) -> Option<&Stored> {
        let index = seq.checked_sub(self.first_seq())?;
        self.log.get(usize::try_from(index).ok()?)
    }

    /// Applies the age, count and byte limits, then forgets pending deliveries of
    /// dropped messages.
    fn enforce_retention(&mut self, config: &MemoryBusConfig, now: Instant) {
        let before = self.first_seq();
        while let Some(front) = self.log.front() {
            let too_old = now.saturating_duration_since(front.stored_at) > config.max_age;
            let too_many = self.log.len() as u64 > config.max_messages;
            let too_big = config.max_bytes.is_some_and(|max| self.bytes > max);
            if !(too_old || too_many || too_big) {
                break;
            }
            if let Some(dropped) = self.log.pop_front() {
                self.bytes -= dropped.payload.len() as u64;
            }
        }
        let first = self.first_seq();
        if first != before {
            for consumer in self.consumers.values_mut() {
                consumer.pending = consumer.pending.split_off(&first);
            }
        }
    }

    fn expire_dedup(&mut self, config: &MemoryBusConfig, now: Instant) {
        while let Some((at, _)) = self.dedup_order.front() {
            let expired = now.saturating_duration_since(*at) >= config.duplicate_window;
            let over_cap = self.dedup_order.len() as u64 > config.max_messages;
            if !(expired || over_cap) {
                break;
            }
            if let Some((_, id)) = self.dedup_order.pop_front() {
                self.dedup.remove(&id);
            }
        }
    }

    fn publish(
        &mut self,
        config: &MemoryBusConfig,
        msg: OutgoingMessage,
        now: Instant,
    ) -> PublishAck {
        self.expire_dedup(config, now);
        if !msg.id.is_empty()
            && let Some(&sequence) = self.dedup.get(&msg.id)
        {
            return PublishAck {
                sequence,
                duplicate: true,
            };
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if !msg.id.is_empty() {
            self.dedup.insert(msg.id.clone(), seq);
            self.dedup_order.push_back((now, msg.id.clone()));
        }
        self.bytes += msg.payload.len() as u64;
        self.log.push_back(Stored {
            seq,
            id: msg.id,
            subject: msg.subject,
            headers: msg.headers,
            payload: msg.payload,
            stored_at: now,
        });
        self.enforce_retention(config, now);
        PublishAck {
            sequence: seq,
            duplicate: false,
        }
    }

    /// The next delivery for `durable_name`: a due redelivery first, then the next new
    /// matching message; otherwise when to look again.
    fn step(
        &mut self,
        shared: &Arc<Shared>,
        durable_name: &str,
        now: Instant,
    ) -> Result<Step, BusError> {
        if self.closed {
            return Ok(Step::Closed);
        }
        self.enforce_retention(&shared.config, now);
        let first_seq = self.first_seq();
        let State { log, consumers, .. } = self;
        let consumer = consumers
            .get_mut(durable_name)
            .ok_or_else(|| BusError::Consumer {
                durable_name: durable_name.to_owned(),
                reason: "the consumer state is gone".to_owned(),
            })?;

        // Redeliveries: the lowest sequence that is due; give up on exhausted ones.
        let mut redeliver = None;
        let mut exhausted = Vec::new();
        for (&seq, pending) in &consumer.pending {
            if pending.due > now {
                continue;
            }
            if consumer
                .max_deliver
                .is_some_and(|max| pending.deliveries >= u64::from(max))
            {
                exhausted.push(seq);
                continue;
            }
            redeliver = Some(seq);
            break;
        }
        for seq in exhausted {
            consumer.pending.remove(&seq);
        }
        let chosen = if let Some(seq) = redeliver {
            consumer.pending.get_mut(&seq).map(|p| {
                p.deliveries += 1;
                p.due = now + consumer.ack_wait;
                (seq, p.deliveries)
            })
        } else {
            let start = consumer.next_seq.max(first_seq);
            let offset = usize::try_from(start - first_seq).unwrap_or(usize::MAX);
            let found = log
                .iter()
                .skip(offset)
                .find(|m| validate::matches_any(&consumer.filters, m.subject.as_str()))
                .map(|m| m.seq);
            consumer.next_seq = found.map_or(first_seq + log.len() as u64, |seq| seq + 1);
            found.map(|seq| {
                consumer.pending.insert(
                    seq,
                    Pending {
                        deliveries: 1,
                        due: now + consumer.ack_wait,
                    },
                );
                (seq, 1)
            })
        };

        let Some((seq, delivery_count)) = chosen else {
            let next_due = consumer.pending.values().map(|p| p.due).min();
            return Ok(Step::Wait(next_due));
        };
        let Some(stored) = self.get(seq) else {
            return Ok(Step::Wait(None));
        };
        Ok(Step::Deliver(Delivery {
            id: stored.id.clone(),
            subject: stored.subject.clone(),
            headers: stored.headers.clone(),
            payload: stored.payload.clone(),
            delivery_count,
            sequence: seq,
            acker: Box::new(MemoryAcker {
                shared: shared.clone(),
                durable_name: durable_name.to_owned(),
                sequence: seq,
                delivery_count,
            }),
        }))
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, msg: OutgoingMessage) -> Result<PublishAck, BusError> {
        validate::message(&msg)?;
        let ack = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(BusError::Closed);
            }
            state.publish(&self.shared.config, msg, Instant::now())
        };
        if !ack.duplicate {
            self.shared.wake();
        }
        Ok(ack)
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>, BusError> {
        validate::consumer(&config)?;
        let mut state = self.shared.lock();
        if state.closed {
            return Err(BusError::Closed);
        }
        let first_seq = state.first_seq();
        let consumer = state
            .consumers
            .entry(config.durable_name.clone())
            .or_insert_with(|| ConsumerState {
                filters: Vec::new(),
                ack_wait: config.ack_wait,
                max_deliver: None,
                next_seq: first_seq,
                pending: BTreeMap::new(),
            });
        consumer.filters = config.filter_subjects;
        consumer.ack_wait = config.ack_wait;
        consumer.max_deliver = config.max_deliver;
        Ok(Box::new(MemoryConsumer {
            shared: self.shared.clone(),
            durable_name: config.durable_name,
            changed: self.shared.changed.subscribe(),
        }))
    }

    async fn subscribe(&self, filter: &str, from: Option<u64>) -> Result<Subscription, BusError> {
        validate::subscription(filter)?;
        let state = self.shared.lock();
        if state.closed {
            return Err(BusError::Closed);
        }
        let last_sequence = state.next_seq - 1;
        Ok(Subscription {
            messages: Box::new(MemorySubscription {
                shared: self.shared.clone(),
                filter: filter.to_owned(),
                next_seq: from.unwrap_or(state.next_seq),
                changed: self.shared.changed.subscribe(),
            }),
            last_sequence,
        })
    }

    async fn check(&self) -> Result<(), BusError> {
        if self.shared.lock().closed {
            return Err(BusError::Closed);
        }
        Ok(())
    }
}

struct MemoryConsumer {
    shared: Arc<Shared>,
    durable_name: String,
    changed: watch::Receiver<u64>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>, BusError> {
        loop {
            // Marked seen before looking, so a change made after the look wakes us.
            self.changed.borrow_and_update();
            let step = self
                .shared
                .lock()
                .step(&self.shared, &self.durable_name, Instant::now())?;
            match step {
                Step::Deliver(delivery) => return Ok(Some(delivery)),
                Step::Closed => return Ok(None),
                Step::Wait(due) => {
                    let timer = async {
                        match due {
                            Some(due) => tokio::time::sleep_until(due).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        changed = self.changed.changed() => {
                            if changed.is_err() {
                                return Ok(None);
                            }
                        }
                        () = timer => {}
                    }
                }
            }
        }
    }
}

/// A [`Bus::subscribe`] read: a cursor into the log, unknown to the bus.
struct MemorySubscription {
    shared: Arc<Shared>,
    filter: String,
    next_seq: u64,
    changed: watch::Receiver<u64>,
}

impl MemorySubscription {
    /// The next matching message at or after `next_seq`, if one is stored.
    fn look(&mut self, state: &mut State) -> Option<Delivery> {
        state.enforce_retention(&self.shared.config, Instant::now());
        let first_seq = state.first_seq();
        let start = self.next_seq.max(first_seq);
        let offset = usize::try_from(start - first_seq).unwrap_or(usize::MAX);
        let found = state
            .log
            .iter()
            .skip(offset)
            .find(|m| crate::subject::matches(&self.filter, m.subject.as_str()));
        self.next_seq = found.map_or(first_seq + state.log.len() as u64, |m| m.seq + 1);
        found.map(|m| Delivery {
            id: m.id.clone(),
            subject: m.subject.clone(),
            headers: m.headers.clone(),
            payload: m.payload.clone(),
            delivery_count: 1,
            sequence: m.seq,
            acker: Box::new(NoAck),
        })
    }
}

#[async_trait]
impl Consumer for MemorySubscription {
    async fn next(&mut self) -> Result<Option<Delivery>, BusError> {
        loop {
            self.changed.borrow_and_update();
            {
                let shared = self.shared.clone();
                let mut state = shared.lock();
                if state.closed {
                    return Ok(None);
                }
                if let Some(delivery) = self.look(&mut state) {
                    return Ok(Some(delivery));
                }
            }
            if self.changed.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}

/// The acker of a subscription's deliveries: nothing to acknowledge.
struct NoAck;

#[async_trait]
impl DeliveryAck for NoAck {
    async fn ack(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn nak(&self, _delay: Option<Duration>) -> Result<(), BusError> {
        Ok(())
    }
}

struct MemoryAcker {
    shared: Arc<Shared>,
    durable_name: String,
    sequence: u64,
    delivery_count: u64,
}

#[async_trait]
impl DeliveryAck for MemoryAcker {
    async fn ack(&self) -> Result<(), BusError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(BusError::Closed);
        }
        if let Some(consumer) = state.consumers.get_mut(&self.durable_name) {
            consumer.pending.remove(&self.sequence);
        }
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError> {
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(BusError::Closed);
            }
            let Some(pending) = state
                .consumers
                .get_mut(&self.durable_name)
                .and_then(|c| c.pending.get_mut(&self.sequence))
            else {
                return Ok(());
            };
            // A nak of an older delivery of a message that was redelivered since is stale.
            if pending.deliveries != self.delivery_count {
                return Ok(());
            }
            pending.due = Instant::now() + delay.unwrap_or_default();
        }
        self.shared.wake();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use godel_types::TeamId;

    use super::*;

    fn msg(team: TeamId, id: &str, payload: &'static [u8]) -> OutgoingMessage {
        OutgoingMessage {
            id: id.to_owned(),
            subject: Subject::task(team, "queued"),
            headers: Headers::new(),
            payload: Bytes::from_static(payload),
        }
    }

    async fn next_now(consumer: &mut Box<dyn Consumer>) -> Option<Delivery> {
        tokio::time::timeout(Duration::from_millis(50), consumer.next())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    #[tokio::test]
    async fn keeps_at_most_max_messages_and_lagging_consumers_skip_dropped() {
        let bus = MemoryBus::new(MemoryBusConfig {
            max_messages: 3,
            ..MemoryBusConfig::default()
        });
        let team = TeamId::new();
        let mut consumer = bus
            .consumer(ConsumerConfig::new("c", vec![]))
            .await
            .unwrap();
        for i in 0..5 {
            bus.publish(msg(team, &format!("m{i}"), b"x"))
                .await
                .unwrap();
        }
        assert_eq!(bus.stored_messages(), 3);
        let first = next_now(&mut consumer).await.unwrap();
        assert_eq!(first.id, "m2");
        assert_eq!(first.sequence, 3);
    }

    #[tokio::test]
    async fn keeps_at_most_max_bytes() {
        let bus = MemoryBus::new(MemoryBusConfig {
            max_bytes: Some(10),
            ..MemoryBusConfig::default()
        });
        let team = TeamId::new();
        for i in 0..4 {
            bus.publish(msg(team, &format!("m{i}"), b"1234"))
                .await
                .unwrap();
        }
        assert_eq!(bus.stored_messages(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn drops_messages_older_than_max_age_and_their_pending_deliveries() {
        let bus = MemoryBus::new(MemoryBusConfig {
            max_age: Duration::from_secs(60),
            ..MemoryBusConfig::default()
        });
        let team = TeamId::new();
        let mut config = ConsumerConfig::new("c", vec![]);
        config.ack_wait = Duration::from_secs(1);
        let mut consumer = bus.consumer(config).await.unwrap();
        bus.publish(msg(team, "old", b"x")).await.unwrap();
        let delivered = next_now(&mut consumer).await.unwrap();
        assert_eq!(delivered.id, "old");
        drop(delivered);

        tokio::time::advance(Duration::from_secs(61)).await;
        bus.publish(msg(team, "new", b"x")).await.unwrap();
        assert_eq!(bus.stored_messages(), 1);
        // The unacked "old" is gone with the message, so it is not redelivered.
        let next = next_now(&mut consumer).await.unwrap();
        assert_eq!(next.id, "new");
        next.ack().await.unwrap();
        assert!(next_now(&mut consumer).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn dedup_window_is_time_bounded() {
        let bus = MemoryBus::new(MemoryBusConfig {
            duplicate_window: Duration::from_secs(120),
            ..MemoryBusConfig::default()
        });
        let team = TeamId::new();
        let first = bus.publish(msg(team, "same", b"x")).await.unwrap();
        let again = bus.publish(msg(team, "same", b"x")).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(again.sequence, first.sequence);

        tokio::time::advance(Duration::from_secs(121)).await;
        let later = bus.publish(msg(team, "same", b"x")).await.unwrap();
        assert!(!later.duplicate);
        assert_eq!(later.sequence, first.sequence + 1);
    }

    #[tokio::test]
    async fn dedup_index_is_capped_at_max_messages() {
        let bus = MemoryBus::new(MemoryBusConfig {
            max_messages: 2,
            ..MemoryBusConfig::default()
        });
        let team = TeamId::new();
        for id in ["a", "b", "c"] {
            bus.publish(msg(team, id, b"x")).await.unwrap();
        }
        assert!(!bus.publish(msg(team, "a", b"x")).await.unwrap().duplicate);
        assert!(bus.publish(msg(team, "c", b"x")).await.unwrap().duplicate);
    }

    #[tokio::test]
    async fn closing_ends_consumers_and_rejects_publishes() {
        let bus = MemoryBus::default();
        let mut consumer = bus
            .consumer(ConsumerConfig::new("c", vec![]))
            .await
            .unwrap();
        let waiter = tokio::spawn(async move { consumer.next().await });
        bus.close();
        assert!(waiter.await.unwrap().unwrap().is_none());
        assert!(matches!(
            bus.publish(msg(TeamId::new(), "x", b"x")).await,
            Err(BusError::Closed)
        ));
        assert!(bus.check().await.is_err());
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_the_bus() {
        let bus = MemoryBus::default();
        let mut consumer = bus
            .consumer(ConsumerConfig::new("c", vec![]))
            .await
            .unwrap();
        drop(bus);
        assert!(consumer.next().await.unwrap().is_none());
    }
}
