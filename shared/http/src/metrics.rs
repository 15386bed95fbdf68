//! The HTTP families every service has, with the series of each route's busiest answers
//! resolved once.

use crate::{App, Route};
use analytics_runtime::metrics::{counter, counter_vec, gauge, histogram_vec, LATENCY_BUCKETS};
use hyper::{Method, StatusCode};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};
use std::sync::OnceLock;
use std::time::Duration;

/// HTTP server metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGauge,
    pub open_connections: IntGauge,
    pub connections_refused: IntCounter,
    /// Series of the busiest answers, resolved once by [`HttpMetrics::resolve_hot`] (a label
    /// lookup costs a hash and a lock).
    hot: OnceLock<Vec<HotSeries>>,
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

    /// The HTTP metric families, in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            hot: OnceLock::new(),
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
        }
    }

    /// Resolves the series of each of `A`'s routes' `hot` answers, once (the first server
    /// of the service does it; until then every answer takes the general way).
    pub fn resolve_hot<A: App>(&self) {
        self.hot.get_or_init(|| {
            Route::<A>::all()
                .flat_map(|r| {
                    r.hot
                        .iter()
                        .map(move |&(method, status)| (r.path, method, status))
                })
                .map(|(route, method, status)| HotSeries {
                    route,
                    method,
                    status,
                    requests: self.requests.with_label_values(&[
                        route,
                        method,
                        &status.to_string(),
                    ]),
                    duration: self.duration.with_label_values(&[route, method]),
                })
                .collect()
        });
    }

    pub fn observe(&self, route: &str, method: &Method, status: StatusCode, elapsed: Duration) {
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            _ => "other",
        };
        let code = status.as_u16();
        let hot = self.hot.get().map_or(&[][..], Vec::as_slice);
        if let Some(h) = hot
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
    use crate::{Check, Handler, HttpError};
    use analytics_runtime::metrics::new_registry;

    struct Test(HttpMetrics);

    fn read(_: &Test, _: hyper::Request<hyper::body::Incoming>) -> Result<(), HttpError> {
        Ok(())
    }

    impl App for Test {
        const ROUTES: &'static [Route<Self>] = &[Route {
            path: "/analytics",
            methods: &[Method::GET, Method::POST],
            hot: &[("GET", 200), ("POST", 204)],
            scope: None,
            handler: Handler::Read(read),
        }];
        type Asked = ();
        async fn readiness(&self) -> Vec<Check> {
            Vec::new()
        }
        fn metrics(&self) -> &HttpMetrics {
            &self.0
        }
    }

    #[test]
    fn resolved_and_looked_up_series_are_the_same() {
        let r = new_registry("test");
        let m = HttpMetrics::new(&r);
        m.resolve_hot::<Test>();
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
        assert_eq!(m.hot.get().map(Vec::len), Some(2));
    }

    #[test]
    fn registry_has_build_info_and_http_families() {
        let r = new_registry("test");
        let m = HttpMetrics::new(&r);
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
        HttpMetrics::new(&r);
        HttpMetrics::new(&r);
    }
}
