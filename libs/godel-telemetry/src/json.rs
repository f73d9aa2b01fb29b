//! The JSON log layer: one JSON object per line, carrying the `trace_id` and `span_id`
//! of the current OpenTelemetry span so a log line leads to its trace.
//!
//! ```json
//! {"timestamp":"2025-01-01T00:00:00.000000Z","level":"INFO","target":"godel_scheduler",
//!  "message":"task leased","fields":{"attempt":2},"span":{"name":"lease","team":"t1"},
//!  "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}
//! ```

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// A `tracing` layer writing JSON lines to `W` (stdout by default, see [`json_layer`]).
pub struct JsonLayer<W> {
    make_writer: W,
    dispatch: OnceLock<WeakDispatch>,
}

/// A JSON log layer writing to stdout.
pub fn json_layer() -> JsonLayer<fn() -> std::io::Stdout> {
    JsonLayer::new(std::io::stdout)
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// A JSON log layer writing each line to a writer from `make_writer`.
    pub fn new(make_writer: W) -> Self {
        Self {
            make_writer,
            dispatch: OnceLock::new(),
        }
    }
}

/// The fields recorded on a span, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain, so a logged error says what went wrong all the way down.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(err) = source {
            text.push_str(": ");
            text.push_str(&err.to_string());
            source = err.source();
        }
        self.0.insert(field.name().to_owned(), Value::String(text));
    }
}

impl<S, W> tracing_subscriber::Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        // The first registration wins: a layer belongs to one subscriber.
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        // `otel.*` fields steer the OpenTelemetry layer; they are not log context.
        fields.retain(|k, _| !k.starts_with("otel."));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(SpanFields(fields)) = ext.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(fields));
            fields.retain(|k, _| !k.starts_with("otel."));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".to_owned(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".to_owned(), Value::String(meta.level().to_string()));
        line.insert("target".to_owned(), Value::String(meta.target().to_owned()));

        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        if let Some(message) = fields.remove("message") {
            line.insert("message".to_owned(), message);
        }
        if !fields.is_empty() {
            line.insert("fields".to_owned(), Value::Object(fields));
        }

        if let Some(leaf) = ctx.event_span(event) {
            // Trace ids first: reading the OpenTelemetry context locks the span's
            // extensions, which must not be held at the same time.
            if let Some(cx) = self
                .dispatch
                .get()
                .and_then(WeakDispatch::upgrade)
                .and_then(|d| tracing_opentelemetry::get_otel_context(&leaf.id(), &d))
            {
                let span = cx.span();
                let sc = span.span_context();
                if sc.is_valid() {
                    line.insert(
                        "trace_id".to_owned(),
                        Value::String(sc.trace_id().to_string()),
                    );
                    line.insert(
                        "span_id".to_owned(),
                        Value::String(sc.span_id().to_string()),
                    );
                }
            }
            // Fields of every enclosing span, inner spans overriding outer ones.
            let mut span_obj = Map::new();
            for span in leaf.scope().from_root() {
                if let Some(SpanFields(f)) = span.extensions().get::<SpanFields>() {
                    span_obj.extend(f.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            span_obj.insert("name".to_owned(), Value::String(leaf.name().to_owned()));
            line.insert("span".to_owned(), Value::Object(span_obj));
        }

        let Ok(mut text) = serde_json::to_vec(&Value::Object(line)) else {
            return;
        };
        text.push(b'\n');
        let mut writer = self.make_writer.make_writer_for(meta);
        // A log line that cannot be written has nowhere better to go.
        let _ = writer.write_all(&text);
    }
}
