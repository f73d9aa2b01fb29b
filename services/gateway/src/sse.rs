//! Server-sent event streams (`text/event-stream`): how a stream is answered, resumed
//! and ended, whatever it carries (see `routes/events.rs` for what each one sends).
//!
//! - Every event of a subject has an `id` that orders it; a client that reconnects
//!   with `Last-Event-ID: <id>` gets exactly the events after it.
//! - An idle stream sends a keep-alive comment every `api.sse_keep_alive`, so proxies
//!   do not close it; `X-Accel-Buffering: no` and `Cache-Control: no-cache` ask
//!   proxies not to buffer or cache it.
//! - A stream ends with an `end` event once its subject reached a terminal state (a
//!   client should then close rather than reconnect), with a `problem` event (an RFC
//!   9457 document) when its source failed, and without a word when the gateway shuts
//!   down or the client goes away.
//!
//! A producer task writes each stream's events to a bounded channel; it stops as soon
//! as the client is gone or the gateway shuts down.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use godel_error::{Error, Problem};
use http::{HeaderMap, HeaderValue, header};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// The request header a reconnecting client names its last event with.
pub(crate) const LAST_EVENT_ID: &str = "last-event-id";

/// Events buffered for a slow client before its producer waits.
const BUFFER: usize = 64;

/// What the streams read from and how they behave.
#[derive(Clone)]
pub(crate) struct Streams {
    /// The bus the task and plan streams subscribe to.
    pub(crate) bus: Arc<dyn godel_bus::Bus>,
    /// Keep-alive comment interval.
    pub(crate) keep_alive: Duration,
    /// Cancelled when the gateway shuts down: every stream ends.
    pub(crate) shutdown: CancellationToken,
}

/// The `Last-Event-ID` of a reconnecting client: the id of the last event it got.
/// Absent or empty: a new stream. Anything but a number is not an id this gateway
/// sent: 400.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let Some(value) = headers.get(LAST_EVENT_ID) else {
        return Ok(None);
    };
    let text = value.to_str().map(str::trim).unwrap_or("?");
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        Error::invalid_argument(
            "Last-Event-ID",
            format!("`{text}` is not the id of an event of this stream (a number)"),
        )
    })
}

/// The producer's end of a stream.
pub(crate) struct Sink {
    tx: mpsc::Sender<Event>,
    shutdown: CancellationToken,
}

impl Sink {
    /// Sends `event`; false when the client is gone or the gateway shuts down, and
    /// the producer should stop.
    pub(crate) async fn send(&self, event: Event) -> bool {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => false,
            sent = self.tx.send(event) => sent.is_ok(),
        }
    }

    /// Resolves once the stream should stop: the client is gone or the gateway shuts
    /// down.
    pub(crate) async fn stopped(&self) {
        tokio::select! {
            () = self.tx.closed() => {}
            () = self.shutdown.cancelled() => {}
        }
    }
}

/// Answers with the events `produce` sends, starting it in its own task; the stream
/// ends when `produce` returns.
pub(crate) fn respond<F, Fut>(streams: &Streams, produce: F) -> Response
where
    F: FnOnce(Sink) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(produce(Sink {
        tx,
        shutdown: streams.shutdown.clone(),
    }));
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(streams.keep_alive))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// An event of the subject, with the id a client resumes after.
pub(crate) fn event(id: u64, data: &serde_json::Value) -> Event {
    Event::default().id(id.to_string()).data(data.to_string())
}

/// The current state, sent first; `id` only when the stream is new (a resumed one
/// keeps the client's position).
pub(crate) fn snapshot(id: Option<u64>, data: &serde_json::Value) -> Event {
    let event = Event::default().event("snapshot").data(data.to_string());
    match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    }
}

/// The last event of a stream whose subject reached a terminal state.
pub(crate) fn end(data: &serde_json::Value) -> Event {
    Event::default().event("end").data(data.to_string())
}

/// The last event of a stream whose source failed.
pub(crate) fn problem(error: &Error) -> Event {
    let doc = Problem::from_error(error).to_json();
    Event::default()
        .event("problem")
        .data(String::from_utf8_lossy(&doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_a_number_or_absent() {
        let mut headers = HeaderMap::new();
        assert_eq!(last_event_id(&headers).unwrap(), None);
        headers.insert(LAST_EVENT_ID, HeaderValue::from_static(" 42 "));
        assert_eq!(last_event_id(&headers).unwrap(), Some(42));
        headers.insert(LAST_EVENT_ID, HeaderValue::from_static(""));
        assert_eq!(last_event_id(&headers).unwrap(), None);
        headers.insert(LAST_EVENT_ID, HeaderValue::from_static("abc"));
        let error = last_event_id(&headers).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("Last-Event-ID"));
    }
}
