//! The command service's metrics (names declared here only).

use analytics_http::HttpMetrics;
use analytics_runtime::metrics::{
    counter_vec, gauge, histogram, hop_seconds, init_labels, Hop, LATENCY_BUCKETS,
};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

/// The `reason` of a batch refused for bad lines (one count per batch).
pub const BATCH_INVALID: &str = "batch_invalid";

/// The service's metric families; `default()` registers them in a registry of their own,
/// which `http` holds and `/metrics` renders.
#[derive(Clone)]
pub struct Metrics {
    pub http: HttpMetrics,
    /// Events acknowledged by the broker, by kind.
    pub accepted: IntCounterVec,
    /// Requests refused with 400, by reason.
    pub rejected: IntCounterVec,
    /// 503 answers, by cause.
    pub unavailable: IntCounterVec,
    /// Time from request to broker acknowledgement.
    pub produce_latency: Histogram,
    /// The same time, as the pipeline's first hop ([`Hop::Acknowledged`]).
    pub hop_acknowledged: Histogram,
    pub queue_depth: IntGauge,
    /// Producers replaced after the broker rejected their idempotence state.
    pub producer_replacements: IntCounter,
}

impl Metrics {
    /// The broker acknowledged what was received at `started`.
    pub fn acknowledged(&self, started: std::time::Instant) {
        let secs = started.elapsed().as_secs_f64();
        self.produce_latency.observe(secs);
        self.hop_acknowledged.observe(secs);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = analytics_runtime::metrics::new_registry("command");
        let m = Self {
            http: HttpMetrics::new(&registry),
            accepted: counter_vec(
                &registry,
                "events_accepted_total",
                "Events acknowledged by the broker and answered 204, by kind.",
                &["kind"],
            ),
            rejected: counter_vec(
                &registry,
                "events_rejected_total",
                "POST requests refused with 400, by reason.",
                &["reason"],
            ),
            unavailable: counter_vec(
                &registry,
                "events_unavailable_total",
                "POST requests answered 503, by cause (queue_full, broker, delivery).",
                &["cause"],
            ),
            produce_latency: histogram(
                &registry,
                "produce_duration_seconds",
                "Time from receiving an event to the broker's acknowledgement.",
                LATENCY_BUCKETS,
            ),
            hop_acknowledged: hop_seconds(&registry, &[Hop::Acknowledged]).remove(0),
            queue_depth: gauge(
                &registry,
                "producer_queue_depth",
                "Messages in the producer queue awaiting acknowledgement.",
            ),
            producer_replacements: analytics_kafka::metrics::producer_replacements(&registry, ""),
        };
        init_labels(&m.accepted, &["click", "impression"]);
        init_labels(&m.rejected, crate::validate::Rejection::REASONS);
        init_labels(&m.rejected, &[BATCH_INVALID]);
        init_labels(&m.unavailable, crate::producer::ProduceError::CAUSES);
        m
    }
}

analytics_runtime::metric_families_test!(
    Metrics::default(),
    &[
        "analytics_events_accepted_total",
        "analytics_events_rejected_total",
        "analytics_events_unavailable_total",
        "analytics_produce_duration_seconds",
        "analytics_producer_queue_depth",
        "analytics_pipeline_hop_seconds",
    ]
);
