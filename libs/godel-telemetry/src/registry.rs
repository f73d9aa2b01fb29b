//! The process-wide Prometheus registry behind the `metrics` facade.
//!
//! Code records with `metrics::counter!` / `histogram!` / `gauge!`; the `/metrics`
//! handler (served by `godel-runtime`) returns [`render_metrics`]. Labels never carry ids.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Histogram buckets, in seconds, for every histogram: 1 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process's Prometheus handle, installing the recorder as the global `metrics`
/// recorder on first use. Later calls (another service in the same process, tests)
/// return the same handle.
///
/// If a different `metrics` recorder was installed first, that one keeps receiving
/// the measurements and this handle renders nothing; a warning is logged.
pub fn prometheus_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(BUCKETS) {
                Ok(b) => b,
                // Only an empty bucket list is rejected; BUCKETS is not empty.
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(err) = metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %err, "another metrics recorder is installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// The Prometheus text exposition of every metric recorded in this process.
pub fn render_metrics() -> String {
    let handle = prometheus_handle();
    handle.run_upkeep();
    handle.render()
}

/// The content type of [`render_metrics`]'s output.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installing_twice_returns_the_same_registry() {
        let first = prometheus_handle();
        let second = prometheus_handle();
        metrics::counter!("godel_telemetry_test_total", "kind" => "unit").increment(3);
        metrics::histogram!("godel_telemetry_test_seconds").record(0.02);
        let text = render_metrics();
        assert!(
            text.contains("godel_telemetry_test_total{kind=\"unit\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("godel_telemetry_test_seconds_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
        assert_eq!(first.render(), second.render());
    }
}
