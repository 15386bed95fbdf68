//! The metrics every service has: a per-service [`prometheus::Registry`] (so tests can run
//! several services in one process) with a build-info gauge and the process metrics, and the
//! constructors of every family. Every name carries the `analytics_` prefix; labels are
//! bounded, their values listed by enums ([`LabelValue`]).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

pub const NAMESPACE: &str = "analytics";

/// Latency buckets from 50 µs to 10 s: fine enough to see sub-millisecond answers.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// A stage of an event's way through the pipeline, timed from its receipt at the command:
/// the `hop` label of `analytics_pipeline_hop_seconds`, which each service fills for its own
/// hops ([`hop_seconds`]), so that one panel shows where the time goes. The times across
/// services compare the command's clock (the receipt) with the service's: a skew between
/// hosts shifts them by as much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// The broker acknowledged the event (command; measured on the command's clock alone).
    Acknowledged,
    /// The processor read it (processor; one live event in 64).
    Consumed,
    /// A partial that includes it was acknowledged on the hourly topic (processor; the
    /// partial's newest event).
    Published,
    /// A partial that includes it was written to Redis (materializer; the partial's newest
    /// event).
    Stored,
    /// The query first answered with it (query; the newest event of the answer).
    Served,
}

impl LabelValue for Hop {
    const ALL: &'static [Self] = &[
        Self::Acknowledged,
        Self::Consumed,
        Self::Published,
        Self::Stored,
        Self::Served,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledged => "acknowledged",
            Self::Consumed => "consumed",
            Self::Published => "published",
            Self::Stored => "stored",
            Self::Served => "served",
        }
    }
}

/// Buckets of the hops: 1 ms to 1 min, fine around the freshness target (400 ms).
pub const HOP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// `analytics_pipeline_hop_seconds{hop}` in `registry`, with the series of `hops` (the
/// service's own) resolved and returned in the same order.
pub fn hop_seconds(registry: &Registry, hops: &[Hop]) -> Vec<Histogram> {
    let family = histogram_vec(
        registry,
        "pipeline_hop_seconds",
        "Time from an event's receipt at the command to each stage of the pipeline, by hop: acknowledged by the broker, consumed by the processor, published in a partial, stored in Redis, served by the query.",
        &["hop"],
        HOP_BUCKETS,
    );
    hops.iter()
        .map(|h| family.with_label_values(&[h.as_str()]))
        .collect()
}

/// Observes on `hop` the time from `received_ms` (the receipt at the command, its clock) to
/// `now_ms`; a negative time (clocks apart) counts as zero.
pub fn observe_since(hop: &Histogram, received_ms: i64, now_ms: i64) {
    hop.observe(now_ms.saturating_sub(received_ms).max(0) as f64 / 1000.0);
}

/// A registry for `service` with the build-info gauge and process metrics already in it.
pub fn new_registry(service: &'static str) -> Registry {
    let registry = Registry::new();
    let info = IntGaugeVec::new(
        Opts::new("build_info", "Build information; always 1.").namespace(NAMESPACE),
        &["service", "version"],
    )
    .expect("valid metric");
    info.with_label_values(&[service, env!("CARGO_PKG_VERSION")])
        .set(1);
    registry
        .register(Box::new(info))
        .expect("first registration");
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("first registration");
    registry
}

/// Registers a collector, panicking on a programming error (duplicate or invalid name).
pub fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once with a valid name");
    c
}

pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help).namespace(NAMESPACE), labels).expect("valid"),
    )
}

/// The values of a metric label, as an enum: listed once ([`LabelValue::ALL`]), so that the
/// label stays bounded and every series can be created at zero ([`init_label_values`]).
pub trait LabelValue: Copy + Sized + 'static {
    /// Every value.
    const ALL: &'static [Self];
    /// The value as the label shows it.
    fn as_str(self) -> &'static str;
}

/// Creates the series of every value of `L` at zero (a counter with that one label).
pub fn init_label_values<L: LabelValue>(c: &IntCounterVec) {
    for v in L::ALL {
        c.with_label_values(&[v.as_str()]);
    }
}

/// Creates the series of every listed label value at zero, so that dashboards and alerts see
/// them before the first event of each kind.
pub fn init_labels(c: &IntCounterVec, values: &[&str]) {
    for v in values {
        c.with_label_values(&[v]);
    }
}

pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::with_opts(Opts::new(name, help).namespace(NAMESPACE)).expect("valid"),
    )
}

pub fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        registry,
        Histogram::with_opts(
            HistogramOpts::new(name, help)
                .namespace(NAMESPACE)
                .buckets(buckets.to_vec()),
        )
        .expect("valid"),
    )
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::with_opts(Opts::new(name, help).namespace(NAMESPACE)).expect("valid"),
    )
}

pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help).namespace(NAMESPACE), labels).expect("valid"),
    )
}

pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help)
                .namespace(NAMESPACE)
                .buckets(buckets.to_vec()),
            labels,
        )
        .expect("valid"),
    )
}

/// The unit test of a service's metrics module: two instances (each with its own registry)
/// register without colliding, with no family twice, and hold `families` and the common ones.
/// `$new` builds the service's metrics, which have a `registry` field.
#[macro_export]
macro_rules! metric_families_test {
    ($new:expr, $families:expr) => {
        #[cfg(test)]
        #[test]
        fn families_are_registered_once_with_the_common_ones() {
            let m = $new;
            let _second = $new;
            $crate::metrics::assert_families(m.http.registry(), $families);
        }
    };
}

/// Asserts that every name in `want`, plus the families every service has, is registered
/// exactly once in `registry` (used by each service's registry test).
pub fn assert_families(registry: &Registry, want: &[&str]) {
    let names: Vec<String> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    for w in want
        .iter()
        .chain(&["analytics_http_requests_in_flight", "analytics_build_info"])
    {
        assert!(names.iter().any(|n| n == w), "{w} missing from {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate family names");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_build_info() {
        let r = new_registry("test");
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_owned()).collect();
        assert!(
            names.iter().any(|n| n == "analytics_build_info"),
            "{names:?}"
        );
    }

    #[test]
    #[should_panic(expected = "registered once")]
    fn duplicate_registration_is_a_bug() {
        let r = new_registry("test");
        counter(&r, "twice_total", "help");
        counter(&r, "twice_total", "help");
    }
}
