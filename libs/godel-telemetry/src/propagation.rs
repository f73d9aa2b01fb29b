//! W3C trace-context propagation (`traceparent`, `tracestate`) across HTTP headers, gRPC
//! metadata and bus message headers. The only place in Godel that reads or writes these
//! headers.
//!
//! The `inject_*` functions write the context of the current `tracing` span; the
//! `*_context` variants take an explicit [`Context`]. The `extract_*` functions return a
//! [`Context`] to hand to [`set_parent`] on a freshly created span.
//!
//! These helpers use the W3C propagator directly, so they work whether or not
//! [`crate::init`] has set the global propagator (tests build their own subscribers).

use std::collections::BTreeMap;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The OpenTelemetry context of the current `tracing` span (empty when no
/// OpenTelemetry layer is installed).
pub fn current_context() -> Context {
    tracing::Span::current().context()
}

/// Makes `span` a child of the remote span in `cx` (from one of the `extract_*`
/// functions). Call it right after creating the span, before entering it or logging
/// in it. A `cx` without a valid remote span leaves `span` as it is.
pub fn set_parent(span: &tracing::Span, cx: Context) {
    if !cx.span().span_context().is_valid() {
        return;
    }
    if let Err(err) = span.set_parent(cx) {
        tracing::debug!(error = %err, "could not continue the incoming trace");
    }
}

/// The trace id of `cx` as 32 lowercase hex characters, if it carries a valid span.
pub fn trace_id_hex(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

// --- HTTP headers ---------------------------------------------------------------

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes the current span's context into HTTP headers (outgoing reqwest calls).
pub fn inject_headers(headers: &mut HeaderMap) {
    inject_context_headers(&current_context(), headers);
}

/// Writes `cx` into HTTP headers.
pub fn inject_context_headers(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// Reads the remote context from HTTP headers (incoming requests).
pub fn extract_headers(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

// --- gRPC metadata ----------------------------------------------------------------

/// Writes the current span's context into gRPC request metadata. Clients usually use
/// [`crate::TraceContextInterceptor`] instead.
pub fn inject_metadata(metadata: &mut MetadataMap) {
    inject_context_metadata(&current_context(), metadata);
}

/// Writes `cx` into gRPC metadata.
pub fn inject_context_metadata(cx: &Context, metadata: &mut MetadataMap) {
    inject_context_headers(cx, metadata.as_mut());
}

/// Reads the remote context from gRPC metadata. Servers usually get this from
/// [`crate::ServerTraceLayer`] instead.
pub fn extract_metadata(metadata: &MetadataMap) -> Context {
    extract_headers(metadata.as_ref())
}

// --- bus message headers ------------------------------------------------------------

struct MapInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).or_else(|| {
            // Header names are case-insensitive on the wire.
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        })
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes the current span's context into bus message headers.
pub fn inject_into(headers: &mut BTreeMap<String, String>) {
    inject_context_into(&current_context(), headers);
}

/// Writes `cx` into bus message headers.
pub fn inject_context_into(cx: &Context, headers: &mut BTreeMap<String, String>) {
    TraceContextPropagator::new().inject_context(cx, &mut MapInjector(headers));
}

/// Reads the remote context from bus message headers.
pub fn extract_from(headers: &BTreeMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(&MapExtractor(headers))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::*;

    fn remote_cx() -> (Context, SpanContext) {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        (Context::new().with_remote_span_context(sc.clone()), sc)
    }

    fn same_span(a: &Context, b: &SpanContext) {
        let span = a.span();
        let got = span.span_context();
        assert!(got.is_valid(), "extracted context is empty");
        assert_eq!(got.trace_id(), b.trace_id());
        assert_eq!(got.span_id(), b.span_id());
        assert_eq!(got.trace_flags(), b.trace_flags());
    }

    #[test]
    fn header_map_round_trip() {
        let (cx, sc) = remote_cx();
        let mut headers = HeaderMap::new();
        inject_context_headers(&cx, &mut headers);
        assert_eq!(
            headers.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        same_span(&extract_headers(&headers), &sc);
    }

    #[test]
    fn grpc_metadata_round_trip() {
        let (cx, sc) = remote_cx();
        let mut md = MetadataMap::new();
        inject_context_metadata(&cx, &mut md);
        assert!(md.get("traceparent").is_some());
        same_span(&extract_metadata(&md), &sc);
    }

    #[test]
    fn bus_headers_round_trip_and_case_insensitive() {
        let (cx, sc) = remote_cx();
        let mut map = BTreeMap::new();
        inject_context_into(&cx, &mut map);
        same_span(&extract_from(&map), &sc);

        let upper: BTreeMap<String, String> = map
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        same_span(&extract_from(&upper), &sc);
    }

    #[test]
    fn empty_carriers_give_empty_context() {
        assert!(
            !extract_from(&BTreeMap::new())
                .span()
                .span_context()
                .is_valid()
        );
        assert!(
            !extract_headers(&HeaderMap::new())
                .span()
                .span_context()
                .is_valid()
        );
        let mut map = BTreeMap::new();
        inject_context_into(&Context::new(), &mut map);
        assert!(map.is_empty(), "{map:?}");
        assert_eq!(trace_id_hex(&Context::new()), None);
    }
}
