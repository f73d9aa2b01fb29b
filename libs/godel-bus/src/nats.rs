//! The NATS JetStream bus.
//!
//! - **One stream per deployment** (`stream_name`), holding `<prefix>.godel.v1.>`, is
//!   created or updated on connect: file storage, `DiscardPolicy::Old`, the configured
//!   `duplicate_window`, `max_age`, `max_messages` and `max_bytes`.
//! - **Subjects on the wire** are the logical subject with `subject_prefix` prepended
//!   (`t_ab12cd.godel.v1.…`); deliveries carry the logical subject again.
//! - **Publish** sets `Nats-Msg-Id` to the message id (JetStream dedups within the
//!   window and answers `duplicate`) plus the user headers, and waits for the ack.
//! - **Consumers** are durable pull consumers with explicit ack, `ack_wait`,
//!   `max_deliver` and `DeliverPolicy::All`. NATS 2.9 allows one filter subject per
//!   consumer, so a config with several filters creates one server-side consumer per
//!   filter, named `<durable>_<16 hex digits of a hash of the filter>`, and merges
//!   their deliveries (filters must not overlap — checked for both buses — so no
//!   message is delivered through two of them). A config with zero or one filter uses
//!   the durable name as is. Order is kept per subject, as each subject matches
//!   exactly one filter. Changing a consumer's filter list later leaves the old
//!   server-side consumers behind (delete them with the `nats` CLI).
//! - **Subscriptions** (`Bus::subscribe`) are ephemeral pull consumers without acks
//!   (`AckPolicy::None`, `DeliverPolicy::ByStartSequence`); the server deletes one a
//!   minute after its reader stopped pulling.
//! - **Acks and naks** are sent without waiting for the server's confirmation (plain
//!   JetStream acks); a lost ack only means a redelivery, which consumers tolerate as
//!   they are idempotent by message id.
//! - **Reconnects** are handled by the client: it reconnects on its own and the pull
//!   streams re-issue their pull requests once connected again.
//! - A message without `Nats-Msg-Id` (published by another client) is delivered with
//!   its stream sequence as id; one whose subject is not a valid `godel.v1` subject is
//!   terminated (`+TERM`) and logged, never delivered.

use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishAckFuture, message::AckKind, stream};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};

use crate::config::BusConfig;
use crate::validate::{self, RESERVED_HEADER_PREFIX};
use crate::{
    Bus, BusError, Consumer, ConsumerConfig, Delivery, DeliveryAck, Headers, OutgoingMessage,
    PublishAck, Subject, Subscription,
};

/// How many messages one pull request asks for. Small enough that buffered messages do
/// not sit long in the client while their `ack_wait` runs.
const PULL_BATCH: usize = 64;

/// How long the server keeps a subscription's ephemeral consumer nobody pulls from.
const SUBSCRIPTION_INACTIVE: Duration = Duration::from_secs(60);

/// A bus on NATS JetStream. Cloning shares the connection.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    url: String,
    stream_name: String,
    /// `""` or `"<subject_prefix>."`.
    wire_prefix: String,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("url", &self.url)
            .field("stream_name", &self.stream_name)
            .field("wire_prefix", &self.wire_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects to `config.url` and creates or updates the stream.
    pub async fn connect(config: &BusConfig) -> Result<Self, BusError> {
        let connect_err = |reason: String| BusError::Connect {
            url: config.url.clone(),
            reason,
        };
        validate_stream_name(&config.stream_name).map_err(connect_err)?;
        validate_prefix(&config.subject_prefix).map_err(connect_err)?;
        let wire_prefix = if config.subject_prefix.is_empty() {
            String::new()
        } else {
            format!("{}.", config.subject_prefix)
        };

        let client = async_nats::ConnectOptions::new()
            .name("godel")
            .connection_timeout(config.connect_timeout)
            .connect(config.url.as_str())
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let js = jetstream::new(client.clone());

        let stream_config = stream::Config {
            name: config.stream_name.clone(),
            subjects: vec![format!("{wire_prefix}{}.>", crate::subject::ROOT)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: config.duplicate_window,
            max_age: config.max_age,
            max_messages: i64::try_from(config.max_messages).unwrap_or(i64::MAX),
            max_bytes: config
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            max_consumers: -1,
            num_replicas: config.replicas.max(1),
            ..Default::default()
        };
        js.create_or_update_stream(stream_config)
            .await
            .map_err(|e| {
                connect_err(format!(
                    "creating or updating stream {}: {e}",
                    config.stream_name
                ))
            })?;

        Ok(Self {
            client,
            js,
            url: config.url.clone(),
            stream_name: config.stream_name.clone(),
            wire_prefix,
        })
    }

    /// The underlying client (connection state, forcing a reconnect in tests).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    fn wire_subject(&self, logical: &str) -> String {
        format!("{}{logical}", self.wire_prefix)
    }

    async fn create_consumer(
        &self,
        stream: &stream::Stream<()>,
        name: String,
        filter: Option<&str>,
        config: &ConsumerConfig,
    ) -> Result<BoxStream<'static, PullItem>, BusError> {
        let err = |reason: String| BusError::Consumer {
            durable_name: config.durable_name.clone(),
            reason,
        };
        let pull = consumer::pull::Config {
            durable_name: Some(name.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver.map_or(-1, i64::from),
            filter_subject: filter.map(|f| self.wire_subject(f)).unwrap_or_default(),
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(pull)
            .await
            .map_err(|e| err(format!("creating server-side consumer {name}: {e}")))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .messages()
            .await
            .map_err(|e| err(format!("pulling from server-side consumer {name}: {e}")))?;
        Ok(messages.boxed())
    }
}

impl NatsBus {
    /// Validates and sends `msg` without waiting for its ack.
    async fn send(&self, msg: OutgoingMessage) -> Result<(String, PublishAckFuture), BusError> {
        validate::message(&msg)?;
        let subject = msg.subject.to_string();
        let err = |reason: String| BusError::Publish {
            subject: subject.clone(),
            reason,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &msg.headers {
            let name = HeaderName::from_str(name).map_err(|e| err(e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| err(e.to_string()))?;
            headers.insert(name, value);
        }
        if !msg.id.is_empty() {
            let id = HeaderValue::from_str(&msg.id).map_err(|e| err(e.to_string()))?;
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        }
        let publish = jetstream::message::PublishMessage::build()
            .payload(msg.payload)
            .headers(headers);
        let ack = self
            .js
            .send_publish(self.wire_subject(msg.subject.as_str()), publish)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok((subject, ack))
    }
}

/// Waits for the ack of a message sent to `subject`.
async fn wait_ack(subject: String, ack: PublishAckFuture) -> Result<PublishAck, BusError> {
    let ack = ack.await.map_err(|e| BusError::Publish {
        subject,
        reason: e.to_string(),
    })?;
    Ok(PublishAck {
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

type PullItem = Result<jetstream::Message, consumer::pull::MessagesError>;

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, msg: OutgoingMessage) -> Result<PublishAck, BusError> {
        let (subject, ack) = self.send(msg).await?;
        wait_ack(subject, ack).await
    }

    /// Pipelined: every message is sent before any ack is awaited, so a batch costs
    /// about one round trip instead of one per message. The server stores messages
    /// from one connection in the order sent; acks are awaited in that order and the
    /// first failure ends the batch (messages after it may have been stored too; they
    /// are published again with the same id, which JetStream deduplicates).
    async fn publish_all(&self, msgs: Vec<OutgoingMessage>) -> Vec<Result<PublishAck, BusError>> {
        let mut pending = Vec::with_capacity(msgs.len());
        let mut out = Vec::with_capacity(msgs.len());
        for msg in msgs {
            match self.send(msg).await {
                Ok(sent) => pending.push(sent),
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        let send_failure = out.pop();
        for (subject, ack) in pending {
            let outcome = wait_ack(subject, ack).await;
            let failed = outcome.is_err();
            out.push(outcome);
            if failed {
                return out;
            }
        }
        out.extend(send_failure);
        out
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>, BusError> {
        validate::consumer(&config)?;
        let stream = self
            .js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| BusError::Consumer {
                durable_name: config.durable_name.clone(),
                reason: format!("opening stream {}: {e}", self.stream_name),
            })?;
        let mut merged = SelectAll::new();
        match config.filter_subjects.as_slice() {
            [] => {
                let name = config.durable_name.clone();
                merged.push(self.create_consumer(&stream, name, None, &config).await?);
            }
            [filter] => {
                let name = config.durable_name.clone();
                merged.push(
                    self.create_consumer(&stream, name, Some(filter), &config)
                        .await?,
                );
            }
            filters => {
                for filter in filters {
                    let name = format!("{}_{:016x}", config.durable_name, fnv1a(filter));
                    merged.push(
                        self.create_consumer(&stream, name, Some(filter), &config)
                            .await?,
                    );
                }
            }
        }
        Ok(Box::new(NatsConsumer {
            messages: merged,
            durable_name: config.durable_name,
            wire_prefix: self.wire_prefix.clone(),
        }))
    }

    async fn subscribe(&self, filter: &str, from: Option<u64>) -> Result<Subscription, BusError> {
        validate::subscription(filter)?;
        let err = |reason: String| BusError::Subscribe {
            filter: filter.to_owned(),
            reason,
        };
        let stream = self
            .js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| err(format!("opening stream {}: {e}", self.stream_name)))?;
        let last_sequence = stream
            .get_info()
            .await
            .map_err(|e| err(format!("stream {} info: {e}", self.stream_name)))?
            .state
            .last_sequence;
        // An ephemeral consumer without acks; the server deletes it once nobody has
        // pulled from it for `SUBSCRIPTION_INACTIVE`.
        let pull = consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.unwrap_or(last_sequence + 1).max(1),
            },
            filter_subject: self.wire_subject(filter),
            inactive_threshold: SUBSCRIPTION_INACTIVE,
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(pull)
            .await
            .map_err(|e| err(format!("creating an ephemeral consumer: {e}")))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .messages()
            .await
            .map_err(|e| err(format!("pulling from the ephemeral consumer: {e}")))?;
        let mut merged = SelectAll::new();
        merged.push(messages.boxed());
        Ok(Subscription {
            messages: Box::new(NatsConsumer {
                messages: merged,
                durable_name: format!("subscription to {filter}"),
                wire_prefix: self.wire_prefix.clone(),
            }),
            last_sequence,
        })
    }

    async fn check(&self) -> Result<(), BusError> {
        self.js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| BusError::Connect {
                url: self.url.clone(),
                reason: format!("stream {} is not available: {e}", self.stream_name),
            })?
            .get_info()
            .await
            .map(drop)
            .map_err(|e| BusError::Connect {
                url: self.url.clone(),
                reason: format!("stream {} info: {e}", self.stream_name),
            })
    }
}

struct NatsConsumer {
    messages: SelectAll<BoxStream<'static, PullItem>>,
    durable_name: String,
    wire_prefix: String,
}

impl NatsConsumer {
    fn err(&self, reason: String) -> BusError {
        BusError::Consumer {
            durable_name: self.durable_name.clone(),
            reason,
        }
    }
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>, BusError> {
        loop {
            let message = match self.messages.next().await {
                None => return Ok(None),
                Some(Ok(message)) => message,
                Some(Err(e)) => match e.kind() {
                    // Transient: the pull stream re-issues its request and goes on.
                    consumer::pull::MessagesErrorKind::MissingHeartbeat
                    | consumer::pull::MessagesErrorKind::Pull => {
                        tracing::debug!(durable = %self.durable_name, error = %e, "pull interrupted; continuing");
                        continue;
                    }
                    _ => return Err(self.err(e.to_string())),
                },
            };
            let (sequence, delivery_count) = match message.info() {
                Ok(info) => (
                    info.stream_sequence,
                    u64::try_from(info.delivered).unwrap_or(1),
                ),
                Err(e) => return Err(self.err(format!("reading delivery info: {e}"))),
            };
            let (message, acker) = message.split();
            let wire = message.subject.as_str();
            let subject = wire
                .strip_prefix(self.wire_prefix.as_str())
                .ok_or_else(|| format!("subject {wire} lacks the deployment prefix"))
                .and_then(|s| Subject::parse(s).map_err(|e| e.to_string()));
            let subject = match subject {
                Ok(subject) => subject,
                Err(reason) => {
                    tracing::warn!(durable = %self.durable_name, sequence, %reason, "terminating a message that is not a godel event");
                    if let Err(e) = acker.ack_with(AckKind::Term).await {
                        tracing::warn!(durable = %self.durable_name, sequence, error = %e, "terminating the message failed");
                    }
                    continue;
                }
            };
            let mut id = None;
            let mut headers = Headers::new();
            for (name, values) in message.headers.iter().flat_map(HeaderMap::iter) {
                let name: &str = name.as_ref();
                let Some(value) = values.first() else {
                    continue;
                };
                if name.eq_ignore_ascii_case(AsRef::<str>::as_ref(
                    &async_nats::header::NATS_MESSAGE_ID,
                )) {
                    id = Some(value.as_str().to_owned());
                } else if !name
                    .to_ascii_lowercase()
                    .starts_with(&RESERVED_HEADER_PREFIX.to_ascii_lowercase())
                {
                    headers.insert(name.to_owned(), value.as_str().to_owned());
                }
            }
            return Ok(Some(Delivery {
                id: id.unwrap_or_else(|| sequence.to_string()),
                subject,
                headers,
                payload: message.payload,
                delivery_count,
                sequence,
                acker: Box::new(NatsAcker(acker)),
            }));
        }
    }
}

struct NatsAcker(jetstream::message::Acker);

#[async_trait]
impl DeliveryAck for NatsAcker {
    async fn ack(&self) -> Result<(), BusError> {
        self.0.ack().await.map_err(|e| BusError::Ack {
            reason: e.to_string(),
        })
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), BusError> {
        self.0
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| BusError::Ack {
                reason: e.to_string(),
            })
    }
}

fn validate_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.contains(|c: char| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
    {
        return Err(format!(
            "stream name `{name}` must be non-empty without `.`, `*`, `>`, `/`, `\\` or whitespace"
        ));
    }
    Ok(())
}

fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix
        .split('.')
        .any(|t| t.is_empty() || t.contains(|c: char| matches!(c, '*' | '>') || c.is_whitespace()))
    {
        return Err(format!(
            "subject prefix `{prefix}` must be `.`-separated non-empty tokens without wildcards or whitespace"
        ));
    }
    Ok(())
}

/// FNV-1a, 64 bit: a hash that stays the same across builds and Rust versions, so
/// server-side consumer names derived from it are stable.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names() {
        assert!(validate_stream_name("GODEL").is_ok());
        assert!(validate_stream_name("a.b").is_err());
        assert!(validate_stream_name("").is_err());
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("prod.eu").is_ok());
        assert!(validate_prefix("prod..eu").is_err());
        assert!(validate_prefix("prod.*").is_err());
    }

    #[test]
    fn fnv1a_is_stable() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
