//! Logs and metrics: one place that names every metric the gateway exports, with
//! low-cardinality labels only (kind, source, reason, severity; never a sensor id).

use std::sync::OnceLock;

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::model::{AlertEvent, AlertEventKind};
use crate::pipeline::Stats;

/// Seconds, from 100 µs (a pipeline batch) to 10 s (a sink write against a struggling store).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process (tests start several gateways in one
/// process; the first install wins and later ones share it).
pub fn metrics_handle() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            // Buckets make every histogram a Prometheus histogram (aggregatable across
            // gateways, `histogram_quantile`) instead of the exporter's default summary.
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(LATENCY_BUCKETS) {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|_| handle)
        })
        .as_ref()
}

/// Logs to stderr; `RUST_LOG` filters, `info` (rumqttd: off) by default. Safe to call more than once.
/// rumqttc logs through the `log` crate: `try_init` also installs the `log` → `tracing`
/// bridge (tracing-subscriber's default `tracing-log` feature), so its lines show here too.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The embedded broker (rumqttd) logs every connection at info and a device's normal
        // disconnect as an error: noise for a broker of devices. citygate reports its start
        // and the [[mqtt]] connections' state itself; `RUST_LOG=info,rumqttd=info` shows it.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Counts a committed pipeline output.
pub fn record_committed(source: &str, stats: &Stats, events: &[AlertEvent]) {
    counter!("citygate_readings_received_total", "source" => source.to_string())
        .increment(stats.received);
    counter!("citygate_readings_accepted_total", "source" => source.to_string())
        .increment(stats.accepted);
    if stats.suspect > 0 {
        counter!("citygate_readings_suspect_total", "source" => source.to_string())
            .increment(stats.suspect);
    }
    if stats.replayed > 0 {
        counter!("citygate_readings_replayed_total", "source" => source.to_string())
            .increment(stats.replayed);
    }
    for (reason, n) in &stats.rejected {
        counter!("citygate_readings_rejected_total", "reason" => *reason).increment(*n);
    }
    for e in events {
        let severity = e.alert.severity.as_str();
        match e.event {
            AlertEventKind::Raised => {
                counter!("citygate_alerts_raised_total", "severity" => severity).increment(1)
            }
            AlertEventKind::Resolved => {
                counter!("citygate_alerts_resolved_total", "severity" => severity).increment(1)
            }
            _ => {}
        }
    }
}

/// Times the pipeline's work on one batch (validation, rules, alerts; no I/O).
pub fn record_pipeline_batch(seconds: f64) {
    histogram!("citygate_pipeline_batch_seconds").record(seconds);
}

/// Times one store commit.
pub fn record_commit_latency(seconds: f64, ok: bool) {
    histogram!("citygate_store_commit_seconds", "store" => "sqlite").record(seconds);
    if !ok {
        counter!("citygate_store_errors_total", "store" => "sqlite").increment(1);
    }
}

/// Counts the oldest dead letters deleted to stay within `sqlite.max_dead_letters`.
pub fn record_dead_letters_dropped(n: usize) {
    if n > 0 {
        counter!("citygate_dead_letters_dropped_total").increment(n as u64);
    }
}

/// Counts an HTTP request turned away by a limit (`rate_limited`, `body_too_large`,
/// `too_many_sse_clients`).
pub fn record_http_rejected(reason: &'static str) {
    counter!("citygate_http_rejected_total", "reason" => reason).increment(1);
}
