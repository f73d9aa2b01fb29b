//! Following the gateway's server-sent event streams (a session's log, a task's
//! state changes): events parsed from the wire, and a loop that reconnects with
//! `Last-Event-ID` when the connection drops, until the stream's `end` event.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::rest::Api;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `id:`, when the event has one.
    pub id: Option<String>,
    /// `event:`; `message` when absent.
    pub kind: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Splits a byte stream into events.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: String,
}

impl Parser {
    /// Adds `chunk` and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        if self.buffer.contains('\r') {
            // A `\r` at the end may be the first half of a `\r\n` split across chunks.
            let split = self.buffer.ends_with('\r');
            if split {
                self.buffer.pop();
            }
            self.buffer = self.buffer.replace("\r\n", "\n").replace('\r', "\n");
            if split {
                self.buffer.push('\r');
            }
        }
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            if let Some(event) = parse_block(&block) {
                events.push(event);
            }
        }
        events
    }
}

fn parse_block(block: &str) -> Option<Event> {
    let mut id = None;
    let mut kind = String::new();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => value.clone_into(&mut kind),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() && kind.is_empty() {
        return None;
    }
    Some(Event {
        id,
        kind: if kind.is_empty() {
            "message".to_owned()
        } else {
            kind
        },
        data: data.join("\n"),
    })
}

/// What to do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Stop,
}

/// Times a dropped stream is reconnected in a row without getting an event.
const RECONNECTS: u32 = 5;

/// Reads the stream at `path` from after `last_event_id`, giving each event
/// (but `end`) to `on_event`, until `end`, or until `on_event` says stop. A dropped
/// connection is resumed after the last event seen; a `problem` event is an error.
pub async fn follow<F>(
    api: &Api,
    path: &str,
    mut last_event_id: Option<String>,
    mut on_event: F,
) -> anyhow::Result<()>
where
    F: FnMut(&Event) -> anyhow::Result<Next>,
{
    let mut failures = 0;
    loop {
        let mut response = api.events(path, last_event_id.as_deref()).await?;
        let mut parser = Parser::default();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(error = %err, "event stream dropped");
                    break;
                }
            };
            for event in parser.feed(&chunk) {
                failures = 0;
                match event.kind.as_str() {
                    "end" => return Ok(()),
                    "problem" => {
                        let doc = event.json();
                        anyhow::bail!(
                            "the event stream failed: {}; run the command again to resume",
                            doc["detail"]
                                .as_str()
                                .or_else(|| doc["title"].as_str())
                                .unwrap_or(&event.data)
                        );
                    }
                    _ => {}
                }
                if event.id.is_some() {
                    last_event_id.clone_from(&event.id);
                }
                if on_event(&event)? == Next::Stop {
                    return Ok(());
                }
            }
        }
        failures += 1;
        if failures > RECONNECTS {
            return Err(anyhow::anyhow!("the event stream at {path} kept dropping")).context(
                "the connection to the gateway is unstable: check it and run the command again",
            );
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one request on `listener` with `body` as an event stream, then
    /// closes the connection; returns the request's head.
    async fn serve_once(listener: &tokio::net::TcpListener, body: &str) -> String {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        String::from_utf8(head).unwrap().to_ascii_lowercase()
    }

    #[tokio::test]
    async fn a_dropped_stream_is_resumed_after_the_last_event() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let requests = tokio::spawn(async move {
            let first = serve_once(&listener, "id: 1\ndata: {\"n\":1}\n\n").await;
            let second = serve_once(
                &listener,
                "id: 2\ndata: {\"n\":2}\n\nevent: end\ndata: {}\n\n",
            )
            .await;
            (first, second)
        });
        let args = crate::cli::ApiArgs {
            server,
            token: Some("token".to_owned()),
            team: Some("team_x".to_owned()),
            output: crate::cli::Output::Json,
        };
        let api = Api::connect(&args).await.unwrap();
        let mut seen = Vec::new();
        follow(
            &api,
            "/v1/teams/team_x/sessions/ses_x/events",
            None,
            |event| {
                seen.push(event.json()["n"].as_u64().unwrap_or(0));
                Ok(Next::Continue)
            },
        )
        .await
        .unwrap();
        assert_eq!(seen, [1, 2]);
        let (first, second) = requests.await.unwrap();
        assert!(!first.contains("last-event-id"), "{first}");
        assert!(second.contains("last-event-id: 1\r\n"), "{second}");
        assert!(second.contains("authorization: bearer token"), "{second}");
    }

    #[test]
    fn events_are_parsed_across_chunks() {
        let mut parser = Parser::default();
        assert!(parser.feed(b"id: 1\ndata: {\"a\"").is_empty());
        // The `\r\n` after `end` is split across two chunks.
        let mut events = parser.feed(b":1}\n\n: keep-alive\n\nevent: end\r");
        assert_eq!(events.len(), 1);
        events.extend(parser.feed(b"\ndata: {}\r\n\r\n"));
        assert_eq!(
            events,
            vec![
                Event {
                    id: Some("1".to_owned()),
                    kind: "message".to_owned(),
                    data: "{\"a\":1}".to_owned()
                },
                Event {
                    id: None,
                    kind: "end".to_owned(),
                    data: "{}".to_owned()
                },
            ]
        );
        assert_eq!(events[0].json()["a"], 1);
    }
}
