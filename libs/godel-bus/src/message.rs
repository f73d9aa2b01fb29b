//! Messages, deliveries and consumer configuration shared by both implementations.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Subject;

/// Message headers (`traceparent`, `ce-type`, …). Keys are case-sensitive as on NATS.
pub type Headers = BTreeMap<String, String>;

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Deduplication id (on NATS: `Nats-Msg-Id`); normally the event id.
    pub id: String,
    pub subject: Subject,
    pub headers: Headers,
    pub payload: Bytes,
}

/// What the bus answered to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// Position in the stream.
    pub sequence: u64,
    /// True when a message with the same id was already stored.
    pub duplicate: bool,
}

/// A durable consumer's settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Durable name: a consumer recreated with it resumes where the last one acked.
    pub durable_name: String,
    /// Subject filters with NATS wildcards (`*` one token, `>` the rest); empty = all.
    pub filter_subjects: Vec<String>,
    /// How long a delivery may stay unacked before it is delivered again.
    pub ack_wait: Duration,
    /// Give up on a message after this many deliveries (`None` = never).
    pub max_deliver: Option<u32>,
}

impl ConsumerConfig {
    pub fn new(durable_name: impl Into<String>, filter_subjects: Vec<String>) -> Self {
        Self {
            durable_name: durable_name.into(),
            filter_subjects,
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
        }
    }
}

/// One delivery of a message to a consumer. Ack it when handled, or nak it to have
/// it redelivered; dropping it without either lets `ack_wait` expire.
pub struct Delivery {
    pub id: String,
    pub subject: Subject,
    pub headers: Headers,
    pub payload: Bytes,
    /// 1 on first delivery, then 2, 3, …
    pub delivery_count: u64,
    /// Position in the stream.
    pub sequence: u64,
    pub acker: Box<dyn DeliveryAck>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("delivery_count", &self.delivery_count)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// Asks for redelivery after `delay` (immediately when `None`).
    pub async fn nak(self, delay: Option<Duration>) -> Result<(), BusError> {
        self.acker.nak(delay).await
    }
}

/// Acknowledgement handle, implemented by each bus.
#[async_trait]
pub trait DeliveryAck: Send + Sync {
    async fn ack(&self) -> Result<(), BusError>;
    async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError>;
}

/// A durable consumer: a stream of deliveries.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; waits until one is available. `Ok(None)` when the bus closed.
    async fn next(&mut self) -> Result<Option<Delivery>, BusError>;
}

/// A [`crate::Bus::subscribe`] read: its messages, and where the stream stood when it
/// began.
pub struct Subscription {
    /// The matching messages, in stream order.
    pub messages: Box<dyn Consumer>,
    /// The sequence of the last message stored when the subscription was made (0 for an
    /// empty stream). A subscription from `None` delivers only higher sequences.
    pub last_sequence: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("last_sequence", &self.last_sequence)
            .finish_non_exhaustive()
    }
}

/// Bus failures, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to the bus at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("publishing to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("consumer {durable_name} failed: {reason}")]
    Consumer {
        durable_name: String,
        reason: String,
    },
    #[error("acknowledging a delivery failed: {reason}")]
    Ack { reason: String },
    #[error("the bus is closed")]
    Closed,
    #[error("subscribing to {filter} failed: {reason}")]
    Subscribe { filter: String, reason: String },
    #[error("invalid subject `{subject}`: {reason}")]
    InvalidSubject { subject: String, reason: String },
}
