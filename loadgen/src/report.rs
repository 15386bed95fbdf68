//! Results of a run: JSON for tools, a readable summary for people.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A latency distribution in milliseconds, with its request rate.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub per_second: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// `None` for an empty histogram (microsecond values).
    pub fn of(h: &Histogram<u64>, over: Duration) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            per_second: h.len() as f64 / over.as_secs_f64().max(1e-9),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub hours: usize,
    /// Writes answered 204 in this run.
    pub acknowledged: u64,
    pub exact: bool,
    pub waited_seconds: f64,
    pub mismatches: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub concurrency: usize,
    pub seconds: f64,
    pub requests: u64,
    pub transport_errors: u64,
    /// Requests per second, all kinds.
    pub throughput: f64,
    pub get: Option<Latency>,
    pub post: Option<Latency>,
    /// Answers by method and status, e.g. `"POST 204"`.
    pub statuses: BTreeMap<String, u64>,
    /// Time from a probe's 204 until a GET counted it.
    pub freshness: Option<Latency>,
    pub verification: Option<Verification>,
}

fn row(f: &mut fmt::Formatter<'_>, name: &str, l: &Option<Latency>) -> fmt::Result {
    match l {
        Some(l) => writeln!(
            f,
            "{name:<10} {:>9} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            l.count, l.per_second, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        ),
        None => Ok(()),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} requests in {:.1} s from {} clients: {:.0} req/s, {} transport errors (seed {})",
            self.requests,
            self.seconds,
            self.concurrency,
            self.throughput,
            self.transport_errors,
            self.seed
        )?;
        writeln!(
            f,
            "{:<10} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "", "count", "per s", "p50 ms", "p90 ms", "p99 ms", "p99.9", "max ms"
        )?;
        row(f, "GET", &self.get)?;
        row(f, "POST", &self.post)?;
        row(f, "freshness", &self.freshness)?;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        writeln!(f, "answers: {}", statuses.join(", "))?;
        if let Some(v) = &self.verification {
            if v.exact {
                writeln!(
                    f,
                    "verified: {} hours exact ({} acknowledged writes; caught up in {:.1} s)",
                    v.hours, v.acknowledged, v.waited_seconds
                )?;
            } else {
                writeln!(f, "VERIFICATION FAILED after {:.1} s:", v.waited_seconds)?;
                for m in &v.mismatches {
                    writeln!(f, "  {m}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_come_from_the_histogram() {
        let mut h = crate::run::histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::of(&h, Duration::from_secs(2)).unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.per_second - 500.0).abs() < 1e-9);
        assert!((l.p50_ms - 0.5).abs() < 0.01, "{}", l.p50_ms);
        assert!((l.p99_ms - 0.99).abs() < 0.01, "{}", l.p99_ms);
        assert!((l.max_ms - 1.0).abs() < 0.01);
        assert!(Latency::of(&crate::run::histogram(), Duration::from_secs(1)).is_none());
    }
}
