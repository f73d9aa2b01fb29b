//! Telemetry for every Godel process: JSON logs carrying trace ids, OpenTelemetry
//! traces exported over OTLP/gRPC, the Prometheus registry, and W3C trace-context
//! propagation across HTTP, gRPC and bus messages.
//!
//! # One `init` per process
//!
//! [`init`] installs process-wide state: the global `tracing` subscriber, the global
//! OpenTelemetry tracer provider and propagator, and the Prometheus recorder. It is
//! called once, by the binary's `main` (inside the Tokio runtime), never by a service
//! library: `godel up` runs five services in one process and calls `init` once for all
//! of them. A second call returns [`TelemetryError::AlreadyInitialized`]. At the end of
//! graceful shutdown the binary calls [`TelemetryGuard::shutdown`] to flush spans.
//!
//! # Pieces
//!
//! - [`json_layer`] / [`JsonLayer`]: the log format (one JSON object per line with
//!   `trace_id`/`span_id`); `log_format = "pretty"` writes a compact one-line human format to stderr instead
//!   (coloured only on a terminal).
//! - [`tracer_provider`] and [`otel_layer`]: tests build these per test and install
//!   them with `tracing::subscriber::set_default` instead of calling [`init`].
//! - [`prometheus_handle`] / [`render_metrics`]: the `/metrics` exposition.
//! - [`propagation`]: inject/extract for `http::HeaderMap`, tonic metadata and
//!   `BTreeMap<String, String>` bus headers; [`ServerTraceLayer`] and
//!   [`TraceContextInterceptor`] do it for servers and gRPC clients.
//!
//! Spans reach OpenTelemetry at INFO and above whatever `log_level` says, so turning
//! logs down never breaks a trace.

mod json;
mod layer;
pub mod propagation;
mod registry;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

pub use json::{JsonLayer, json_layer};
pub use layer::{ServerTrace, ServerTraceFuture, ServerTraceLayer, TraceContextInterceptor};
pub use propagation::{extract_from, inject_into, set_parent};
pub use registry::{METRICS_CONTENT_TYPE, prometheus_handle, render_metrics};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, with `trace_id` and `span_id`.
    #[default]
    Json,
    /// Multi-line human-readable output for a terminal.
    Pretty,
}

/// Telemetry settings; a section of every service's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An `EnvFilter` directive for logs: `info`, `warn,godel_scheduler=debug`, …
    pub log_level: String,
    /// `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint (`http://otel-collector:4317`); no export when
    /// unset, though spans still get ids so logs and propagation carry them.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    pub service_name: String,
    /// Fraction of new traces sampled, 0.0–1.0; a request that arrives with a
    /// sampling decision keeps it.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".to_owned(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
            service_name: "godel".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

/// Why telemetry could not be set up or flushed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log_level` is not a valid `EnvFilter` directive.
    #[error("invalid log_level `{directive}`")]
    InvalidLogLevel {
        /// The directive as configured.
        directive: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },

    /// `sample_ratio` is outside 0.0–1.0.
    #[error("sample_ratio {ratio} is outside 0.0..=1.0")]
    InvalidSampleRatio {
        /// The ratio as configured.
        ratio: f64,
    },

    /// The OTLP exporter could not be built for the endpoint.
    #[error("cannot build the OTLP exporter for {endpoint}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's complaint.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },

    /// A global `tracing` subscriber is already installed: `init` was called twice.
    #[error("telemetry is already initialized in this process")]
    AlreadyInitialized(#[source] tracing_subscriber::util::TryInitError),

    /// Flushing or shutting down the span exporter failed.
    #[error("flushing telemetry failed")]
    Flush(#[source] opentelemetry_sdk::error::OTelSdkError),

    /// The blocking flush task did not complete.
    #[error("the telemetry flush task failed")]
    FlushTask(#[source] tokio::task::JoinError),
}

/// Builds the tracer provider for `config`: parent-based ratio sampling, the service
/// name as a resource, and — when `otlp_endpoint` is set — a batch OTLP/gRPC exporter.
/// With an endpoint this must run inside a Tokio runtime (the exporter's channel lives
/// on it).
pub fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    if !(0.0..=1.0).contains(&config.sample_ratio) {
        return Err(TelemetryError::InvalidSampleRatio {
            ratio: config.sample_ratio,
        });
    }
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        );
    if let Some(endpoint) = &config.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|source| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                source,
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The `tracing` → OpenTelemetry bridge layer for `provider`.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("godel"))
}

/// Installs logging, tracing, propagation and metrics for this process. Call once, from
/// the binary, inside the Tokio runtime; see the crate docs.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&config.log_level).map_err(|source| {
        TelemetryError::InvalidLogLevel {
            directive: config.log_level.clone(),
            source,
        }
    })?;
    let provider = tracer_provider(config)?;

    let (json, pretty) = match config.log_format {
        LogFormat::Json => (Some(json_layer()), None),
        LogFormat::Pretty => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_target(false)
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            ),
        ),
    };
    Registry::default()
        .with(otel_layer(&provider).with_filter(LevelFilter::INFO))
        .with(json.with_filter(filter.clone()))
        .with(pretty.with_filter(filter))
        .try_init()
        .map_err(TelemetryError::AlreadyInitialized)?;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    opentelemetry::global::set_tracer_provider(provider.clone());
    prometheus_handle();
    Ok(TelemetryGuard { provider })
}

/// Keeps the tracer provider of [`init`]; [`TelemetryGuard::shutdown`] flushes it.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// The process's tracer provider.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports every finished span and stops the exporter. Call it last in graceful
    /// shutdown; spans ended afterwards are dropped.
    pub async fn shutdown(self) -> Result<(), TelemetryError> {
        shutdown_provider(self.provider).await
    }
}

/// Flushes and shuts down `provider` on a blocking thread, so the async exporter keeps
/// being driven by the runtime meanwhile (even a current-thread one).
pub async fn shutdown_provider(provider: SdkTracerProvider) -> Result<(), TelemetryError> {
    tokio::task::spawn_blocking(move || {
        provider.force_flush().map_err(TelemetryError::Flush)?;
        provider.shutdown().map_err(TelemetryError::Flush)
    })
    .await
    .map_err(TelemetryError::FlushTask)?
}

/// Exports every finished span of `provider` without shutting it down (tests).
pub async fn flush_provider(provider: &SdkTracerProvider) -> Result<(), TelemetryError> {
    let provider = provider.clone();
    tokio::task::spawn_blocking(move || provider.force_flush().map_err(TelemetryError::Flush))
        .await
        .map_err(TelemetryError::FlushTask)?
}
