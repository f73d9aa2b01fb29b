//! What crosses the proxy: request headers without the agent's credentials and
//! hop-by-hop headers, response headers likewise, and the response body streamed
//! through a [`Meter`] chunk by chunk (never buffered whole).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, header};
use bytes::Bytes;
use futures::Stream;

use super::meter::{Meter, Tokens};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and others that describe one connection.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` is hop-by-hop here: a fixed one or one the `Connection` header
/// lists.
fn hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    if HOP_BY_HOP.contains(&name.as_str()) {
        return true;
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|listed| listed.trim().eq_ignore_ascii_case(name.as_str()))
}

/// The agent's headers to send upstream: everything (`anthropic-version`,
/// `anthropic-beta`, `openai-beta`, …) except its credentials, hop-by-hop headers,
/// `host`, `content-length` (set from the body sent) and `accept-encoding` (the
/// proxy reads usage from the body, so it asks for it uncompressed).
pub fn request_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        let drop = hop_by_hop(name, incoming)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::AUTHORIZATION
            || name == header::ACCEPT_ENCODING
            || name.as_str() == "x-api-key";
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The upstream's headers to send to the agent: everything except hop-by-hop
/// headers and `content-length` (the body is re-framed).
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        if !hop_by_hop(name, upstream) && name != header::CONTENT_LENGTH {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;
type OnDone = Box<dyn FnOnce(Option<Tokens>) + Send>;

/// An upstream body passed through as it arrives, metered on the way; `on_done`
/// gets the usage once the body ended or the agent went away (dropped).
pub struct MeteredBody {
    inner: ByteStream,
    meter: Option<Meter>,
    on_done: Option<OnDone>,
}

impl MeteredBody {
    pub fn new(
        inner: impl Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
        meter: Meter,
        on_done: impl FnOnce(Option<Tokens>) + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
            meter: Some(meter),
            on_done: Some(Box::new(on_done)),
        }
    }

    fn done(&mut self) {
        if let (Some(meter), Some(on_done)) = (self.meter.take(), self.on_done.take()) {
            on_done(meter.finish());
        }
    }
}

impl Stream for MeteredBody {
    type Item = Result<Bytes, reqwest::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(meter) = self.meter.as_mut() {
                    meter.feed(chunk);
                }
            }
            Poll::Ready(Some(Err(_)) | None) => self.done(),
            Poll::Pending => {}
        }
        next
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.done();
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer gdst_x"),
            ("x-api-key", "gdst_x"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "127.0.0.1"),
            ("content-length", "10"),
            ("accept-encoding", "gzip"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "a,b"),
            ("content-type", "application/json"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let out = request_headers(&headers);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["anthropic-version", "anthropic-beta", "content-type"]
        );
    }
}
