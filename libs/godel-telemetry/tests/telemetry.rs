//! Telemetry through real pipes: JSON log lines, a tower server layer, and an OTLP
//! export of a trace that crosses a real gRPC call.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use godel_telemetry::propagation::{inject_context_headers, trace_id_hex};
use godel_telemetry::{
    JsonLayer, ServerTraceLayer, TelemetryConfig, TelemetryError, TraceContextInterceptor,
    flush_provider, otel_layer, tracer_provider,
};
use godel_test_utils::otlp::OtlpReceiver;
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().expect("lock").clone();
        String::from_utf8(bytes)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn local_provider() -> opentelemetry_sdk::trace::SdkTracerProvider {
    tracer_provider(&TelemetryConfig::default()).expect("provider without exporter")
}

fn remote_parent() -> (Context, SpanContext) {
    let sc = SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("trace id"),
        SpanId::from_hex("b7ad6b7169203331").expect("span id"),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    (Context::new().with_remote_span_context(sc.clone()), sc)
}

#[test]
fn json_log_line_inside_a_span_carries_its_trace_id() {
    let provider = local_provider();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = Registry::default()
        .with(otel_layer(&provider))
        .with(JsonLayer::new(move || writer.clone()));

    let trace_id = tracing::subscriber::with_default(subscriber, || {
        tracing::info!("outside any span");
        let span = tracing::info_span!("lease", team = "t1", otel.kind = "server");
        let trace_id = trace_id_hex(&span.context()).expect("span has a trace id");
        span.in_scope(|| {
            let inner = tracing::info_span!("inner", attempt = 2u64);
            inner.in_scope(|| tracing::warn!(task = "x", "task leased"));
        });
        trace_id
    });

    let lines = captured.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].get("trace_id").is_none(),
        "no span, no trace id: {}",
        lines[0]
    );
    assert_eq!(lines[0]["message"], "outside any span");

    let line = &lines[1];
    assert_eq!(line["message"], "task leased");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16));
    assert_eq!(line["fields"]["task"], "x");
    assert_eq!(line["span"]["name"], "inner");
    assert_eq!(line["span"]["team"], "t1", "outer span fields are included");
    assert_eq!(line["span"]["attempt"], 2);
    assert!(line["span"].get("otel.kind").is_none(), "{line}");
}

#[tokio::test]
async fn server_layer_continues_the_incoming_traceparent() {
    let provider = local_provider();
    let subscriber = Registry::default().with(otel_layer(&provider));
    let _default = tracing::subscriber::set_default(subscriber);

    let (parent_cx, parent) = remote_parent();
    let mut svc = ServerTraceLayer::new()
        .skip_paths(["/livez"])
        .layer(tower::service_fn(|_req: http::Request<()>| async move {
            let cx = tracing::Span::current().context();
            let span = cx.span();
            let sc = span.span_context();
            Ok::<_, std::convert::Infallible>(http::Response::new((
                sc.is_valid().then(|| sc.trace_id()),
                sc.span_id(),
            )))
        }));

    let mut req = http::Request::builder()
        .uri("/v1/tasks")
        .body(())
        .expect("request");
    inject_context_headers(&parent_cx, req.headers_mut());
    let resp = svc
        .ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("response");
    let (trace_id, span_id) = resp.into_body();
    assert_eq!(
        trace_id,
        Some(parent.trace_id()),
        "the request continues the caller's trace"
    );
    assert_ne!(span_id, parent.span_id(), "the server span is a new span");

    let mut req = http::Request::builder()
        .uri("/livez")
        .body(())
        .expect("request");
    inject_context_headers(&parent_cx, req.headers_mut());
    let resp = svc
        .ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("response");
    assert_eq!(resp.into_body().0, None, "skipped paths get no span");
}

#[tokio::test]
async fn otlp_export_shows_one_trace_across_a_grpc_call() {
    let receiver = OtlpReceiver::start().await;
    let provider = tracer_provider(&TelemetryConfig {
        otlp_endpoint: Some(receiver.endpoint()),
        service_name: "telemetry-e2e".to_owned(),
        ..TelemetryConfig::default()
    })
    .expect("provider with OTLP exporter");
    // A current-thread runtime: the server tasks run on this thread and see this
    // subscriber.
    let _default =
        tracing::subscriber::set_default(Registry::default().with(otel_layer(&provider)));

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ServerTraceLayer::new())
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::with_interceptor(channel, TraceContextInterceptor);
    let span = tracing::info_span!("health_probe", otel.kind = "client");
    let client_trace = trace_id_hex(&span.context()).expect("client trace id");
    let client_span = span.context().span().span_context().span_id().to_string();
    let resp = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .instrument(span.clone())
        .await
        .expect("health check");
    assert_eq!(
        resp.into_inner().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    drop(span);

    let spans = godel_test_utils::eventually(
        "client and server spans at the OTLP receiver",
        Duration::from_secs(20),
        || {
            let provider = provider.clone();
            let receiver = &receiver;
            async move {
                flush_provider(&provider).await.expect("flush");
                let spans = receiver.spans();
                let both = spans.iter().any(|s| s.name == "health_probe")
                    && spans
                        .iter()
                        .any(|s| s.name == "grpc.health.v1.Health/Check");
                both.then_some(spans)
            }
        },
    )
    .await;

    let client = spans
        .iter()
        .find(|s| s.name == "health_probe")
        .expect("client span");
    let server = spans
        .iter()
        .find(|s| s.name == "grpc.health.v1.Health/Check")
        .expect("server span");
    assert_eq!(client.trace_id, client_trace);
    assert_eq!(client.span_id, client_span);
    assert_eq!(
        server.trace_id, client.trace_id,
        "one trace across the call"
    );
    assert_eq!(
        server.parent_span_id, client.span_id,
        "server span is the client's child"
    );
    assert_eq!(server.service_name, "telemetry-e2e");
    assert_eq!(
        server.attributes.get("rpc.system").map(String::as_str),
        Some("grpc")
    );
    assert_eq!(
        server.attributes.get("rpc.method").map(String::as_str),
        Some("Check")
    );
}

#[tokio::test]
async fn init_installs_once_per_process() {
    let config = TelemetryConfig {
        log_level: "not a [valid directive".to_owned(),
        ..Default::default()
    };
    assert!(matches!(
        godel_telemetry::init(&config),
        Err(TelemetryError::InvalidLogLevel { .. })
    ));
    let bad_ratio = TelemetryConfig {
        sample_ratio: 1.5,
        ..Default::default()
    };
    assert!(matches!(
        godel_telemetry::init(&bad_ratio),
        Err(TelemetryError::InvalidSampleRatio { .. })
    ));

    let guard = godel_telemetry::init(&TelemetryConfig::default()).expect("first init");
    let again = godel_telemetry::init(&TelemetryConfig::default());
    assert!(
        matches!(again, Err(TelemetryError::AlreadyInitialized(_))),
        "{again:?}"
    );

    // The global subscriber now gives spans trace ids, so propagation works.
    let span = tracing::info_span!("after_init");
    let mut headers = http::HeaderMap::new();
    span.in_scope(|| godel_telemetry::propagation::inject_headers(&mut headers));
    assert!(headers.contains_key("traceparent"), "{headers:?}");

    metrics::counter!("godel_init_test_total").increment(1);
    assert!(godel_telemetry::render_metrics().contains("godel_init_test_total 1"));
    guard.shutdown().await.expect("shutdown");
}
