//! The event bus: typed, versioned subjects and one `Bus` trait with two
//! implementations of the same semantics — NATS JetStream for production and an
//! in-process bus for `godel up` and tests.
//!
//! Semantics both implementations keep (checked by one conformance suite):
//! - **at-least-once**: a delivery that is not acked within `ack_wait` (or is
//!   nak'ed) is delivered again, with a higher `delivery_count`;
//! - **dedup by message id**: publishing the same `OutgoingMessage::id` twice
//!   within the dedup window stores it once (`PublishAck::duplicate`);
//! - **ordered per subject**: one consumer sees messages of a subject in publish order;
//! - **durable consumers**: a consumer recreated under the same durable name resumes
//!   after the last acked message;
//! - **subscriptions** (`Bus::subscribe`): an unacked read of one filter from a stream
//!   sequence (or from now), for live views that resume by sequence.
//!
//! Services build their bus from configuration:
//!
//! ```no_run
//! # async fn run() -> Result<(), godel_bus::BusError> {
//! let bus = godel_bus::connect(&godel_bus::BusConfig::default()).await?; // in-process
//! bus.check().await?;
//! # Ok(()) }
//! ```

mod config;
pub mod memory;
mod message;
pub mod nats;
pub mod subject;
mod validate;

pub use config::{BusConfig, BusKind, connect};
pub use memory::{MemoryBus, MemoryBusConfig};
pub use message::{
    BusError, Consumer, ConsumerConfig, Delivery, DeliveryAck, Headers, OutgoingMessage,
    PublishAck, Subscription,
};
pub use nats::NatsBus;
pub use subject::Subject;

use async_trait::async_trait;

/// A message bus with JetStream-like semantics.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes one message and waits until the bus has stored it.
    async fn publish(&self, msg: OutgoingMessage) -> Result<PublishAck, BusError>;

    /// Publishes `msgs` in order and returns the outcome of the leading ones that
    /// were attempted: every message before the first failure was stored, in order;
    /// the first failure ends the list and nothing after it counts as published.
    /// The default publishes one at a time; a bus may pipeline (send them all, then
    /// wait for the acks in order).
    async fn publish_all(&self, msgs: Vec<OutgoingMessage>) -> Vec<Result<PublishAck, BusError>> {
        let mut out = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let outcome = self.publish(msg).await;
            let failed = outcome.is_err();
            out.push(outcome);
            if failed {
                break;
            }
        }
        out
    }

    /// Creates (or reattaches to) a durable consumer.
    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>, BusError>;

    /// Reads the messages matching `filter` (NATS wildcards) in stream order, from
    /// stream sequence `from` on — or, when `from` is `None`, those stored after this
    /// call — without a durable consumer: nothing is remembered for it on the bus once
    /// it is dropped, and its deliveries need no ack (acking does nothing). For live
    /// views that resume by sequence, such as the gateway's event streams. Messages
    /// retention already dropped are skipped.
    async fn subscribe(&self, filter: &str, from: Option<u64>) -> Result<Subscription, BusError>;

    /// Checks that the bus is reachable and usable (for readiness probes).
    async fn check(&self) -> Result<(), BusError>;
}
