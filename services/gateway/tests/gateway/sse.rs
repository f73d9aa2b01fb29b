//! A small server-sent events reader over a reqwest response.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

/// One frame of the stream: an event, or a comment (keep-alive).
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: bool,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    pub fn id(&self) -> u64 {
        self.id.as_deref().unwrap().parse().unwrap()
    }
}

pub struct EventStream {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl EventStream {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let headers = response.headers();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream"),
            "{headers:?}"
        );
        assert_eq!(headers["x-accel-buffering"], "no");
        assert_eq!(headers["cache-control"], "no-cache");
        Self {
            body: response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next frame; `None` once the server ended the stream. Fails the test when
    /// nothing comes within 20 seconds.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .expect("a frame within 20 s");
            match chunk {
                None => {
                    assert!(self.buffer.trim().is_empty(), "{:?}", self.buffer);
                    return None;
                }
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
            }
        }
    }

    /// The next frame that is not a keep-alive comment.
    pub async fn next_event(&mut self) -> Option<Frame> {
        loop {
            let frame = self.next().await?;
            if !frame.comment {
                return Some(frame);
            }
        }
    }
}

fn parse(block: &str) -> Frame {
    let mut frame = Frame::default();
    let mut data = Vec::new();
    for line in block.lines().filter(|l| !l.is_empty()) {
        if line.starts_with(':') {
            frame.comment = true;
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
    frame.data = data.join("\n");
    frame
}
