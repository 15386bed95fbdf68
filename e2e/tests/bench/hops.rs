//! Section 5a: where the freshness goes, hop by hop: the services' own
//! `analytics_pipeline_hop_seconds` over the freshness runs (each hop timed from the event's
//! receipt at the command), as the difference of two scrapes.

use analytics_runtime::metrics::{Hop, LabelValue};
use anyhow::Result;
use e2e::Service;

/// The buckets of every hop, as scraped from the service that times it.
pub struct Snapshot(Vec<(Hop, Vec<(f64, f64)>)>);

/// Which service times a hop.
fn timer<'a>(hop: Hop, services: &Services<'a>) -> &'a Service {
    match hop {
        Hop::Acknowledged => services.command,
        Hop::Consumed | Hop::Published => services.processor,
        Hop::Stored => services.materializer,
        Hop::Served => services.query,
    }
}

pub struct Services<'a> {
    pub command: &'a Service,
    pub processor: &'a Service,
    pub materializer: &'a Service,
    pub query: &'a Service,
}

pub async fn snapshot(services: &Services<'_>) -> Result<Snapshot> {
    let mut hops = Vec::new();
    for &hop in Hop::ALL {
        let addr = timer(hop, services).addr();
        let selector = format!("analytics_pipeline_hop_seconds{{hop=\"{}\"}}", hop.as_str());
        hops.push((hop, e2e::scrape::histogram(&addr, &selector).await?));
    }
    Ok(Snapshot(hops))
}

/// `(hop, observations, p50 ms, p99 ms)` of what was observed between `before` and `after`,
/// the quantiles interpolated within buckets as Prometheus's `histogram_quantile` does.
pub fn between(before: &Snapshot, after: &Snapshot) -> Vec<(Hop, f64, f64, f64)> {
    after
        .0
        .iter()
        .zip(&before.0)
        .map(|((hop, a), (_, b))| {
            let delta: Vec<(f64, f64)> = a
                .iter()
                .enumerate()
                .map(|(i, &(le, n))| (le, n - b.get(i).map_or(0.0, |x| x.1)))
                .collect();
            let total = delta.last().map_or(0.0, |x| x.1);
            let q = |q: f64| quantile(&delta, q) * 1000.0;
            (*hop, total, q(0.5), q(0.99))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, in the buckets' unit.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let within = if n > prev.1 {
                (rank - prev.1) / (n - prev.1)
            } else {
                0.0
            };
            return prev.0 + (le - prev.0) * within;
        }
        prev = (le, n);
    }
    prev.0
}

#[test]
fn quantiles_interpolate_within_buckets() {
    let b = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
    assert!((quantile(&b, 0.5) - 0.1).abs() < 1e-9);
    assert!((quantile(&b, 0.75) - 0.15).abs() < 1e-9);
    assert!(quantile(&[], 0.5).is_nan());
}
