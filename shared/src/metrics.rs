//! Metrics shared by every service: HTTP request metrics, a build-info gauge and process
//! metrics, registered into a per-service [`prometheus::Registry`] (so tests can run several
//! services in one process). Every name carries the `analytics_` prefix; labels are bounded.

use hyper::{Method, StatusCode};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::time::Duration;

pub const NAMESPACE: &str = "analytics";

/// Latency buckets from 50 µs to 10 s: fine enough to see sub-millisecond answers.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

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

/// `{service}_offset_gaps_total{outcome}`: records found beyond the expected offset, by what
/// was done (`refetched`: sought back; `skipped`: taken as a real gap). See [`crate::gaps`].
pub fn offset_gaps(registry: &Registry, service: &str) -> IntCounterVec {
    let c = counter_vec(
        registry,
        &format!("{service}_offset_gaps_total"),
        "Records consumed beyond the next expected offset, by outcome (refetched: sought back and read again; skipped: taken as a real gap).",
        &["outcome"],
    );
    init_labels(&c, &["refetched", "skipped"]);
    c
}

/// `{prefix}producer_replacements_total`: producers replaced after a fatal error
/// (`shared::producer::Recovering`).
pub fn producer_replacements(registry: &Registry, prefix: &str) -> IntCounter {
    counter(
        registry,
        &format!("{prefix}producer_replacements_total"),
        "Kafka producers replaced by a new instance after the broker rejected their idempotence state (fenced, fatal error).",
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

/// HTTP server metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGauge,
    pub open_connections: IntGauge,
    pub connections_refused: IntCounter,
    /// Series of the busiest answers, resolved once (a label lookup costs a hash and a lock).
    hot: Vec<HotSeries>,
    /// The registry these families are in, rendered whole at `/metrics`.
    registry: Registry,
}

#[derive(Clone)]
struct HotSeries {
    route: &'static str,
    method: &'static str,
    status: u16,
    requests: IntCounter,
    duration: Histogram,
}

impl HttpMetrics {
    /// The service's whole registry (these families and its own), as `/metrics` renders it.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The HTTP metric families, with the series of each route's `hot` answers resolved up
    /// front (`routes`: the service's own routes, [`crate::http::App::routes`]).
    pub fn new(registry: &Registry, routes: &[crate::http::Route]) -> Self {
        let mut m = Self {
            hot: Vec::new(),
            registry: registry.clone(),
            requests: counter_vec(
                registry,
                "http_requests_total",
                "HTTP requests answered, by route, method and status code.",
                &["route", "method", "status"],
            ),
            duration: histogram_vec(
                registry,
                "http_request_duration_seconds",
                "Time from request to response, by route and method.",
                &["route", "method"],
                LATENCY_BUCKETS,
            ),
            in_flight: gauge(
                registry,
                "http_requests_in_flight",
                "HTTP requests being handled.",
            ),
            open_connections: gauge(
                registry,
                "http_open_connections",
                "HTTP connections being served (at most --max-connections).",
            ),
            connections_refused: counter(
                registry,
                "http_connections_refused_total",
                "Connections beyond --max-connections, answered 503 and closed.",
            ),
        };
        m.hot = routes
            .iter()
            .flat_map(|r| {
                r.hot
                    .iter()
                    .map(move |&(method, status)| (r.path, method, status))
            })
            .map(|(route, method, status)| HotSeries {
                route,
                method,
                status,
                requests: m
                    .requests
                    .with_label_values(&[route, method, &status.to_string()]),
                duration: m.duration.with_label_values(&[route, method]),
            })
            .collect();
        m
    }

    pub fn observe(&self, route: &str, method: &Method, status: StatusCode, elapsed: Duration) {
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            _ => "other",
        };
        let code = status.as_u16();
        if let Some(h) = self
            .hot
            .iter()
            .find(|h| h.status == code && h.method == method && h.route == route)
        {
            h.requests.inc();
            h.duration.observe(elapsed.as_secs_f64());
            return;
        }
        self.requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_ROUTES: &[crate::http::Route] = &[crate::http::Route {
        path: "/analytics",
        methods: &[Method::GET, Method::POST],
        allow: "GET, POST",
        hot: &[("GET", 200), ("POST", 204)],
        scope: None,
    }];

    #[test]
    fn resolved_and_looked_up_series_are_the_same() {
        let r = new_registry("test");
        let m = HttpMetrics::new(&r, TEST_ROUTES);
        let d = Duration::from_micros(80);
        m.observe("/analytics", &Method::GET, StatusCode::OK, d);
        m.observe("/analytics", &Method::GET, StatusCode::BAD_REQUEST, d);
        m.observe("/analytics", &Method::POST, StatusCode::NO_CONTENT, d);
        m.observe("other", &Method::GET, StatusCode::OK, d);
        let count = |labels: &[&str]| m.requests.with_label_values(labels).get();
        assert_eq!(count(&["/analytics", "GET", "200"]), 1);
        assert_eq!(count(&["/analytics", "GET", "400"]), 1);
        assert_eq!(count(&["/analytics", "POST", "204"]), 1);
        assert_eq!(count(&["other", "GET", "200"]), 1);
        assert_eq!(count(&["/analytics", "HEAD", "200"]), 0);
        let n = m
            .duration
            .with_label_values(&["/analytics", "GET"])
            .get_sample_count();
        assert_eq!(n, 2);
    }

    #[test]
    fn registry_has_build_info_and_http_families() {
        let r = new_registry("test");
        let m = HttpMetrics::new(&r, TEST_ROUTES);
        m.observe(
            "/analytics",
            &Method::GET,
            StatusCode::OK,
            Duration::from_micros(80),
        );
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_owned()).collect();
        for want in [
            "analytics_build_info",
            "analytics_http_requests_total",
            "analytics_http_request_duration_seconds",
            "analytics_http_requests_in_flight",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "registered once")]
    fn duplicate_registration_is_a_bug() {
        let r = new_registry("test");
        HttpMetrics::new(&r, TEST_ROUTES);
        HttpMetrics::new(&r, TEST_ROUTES);
    }
}
