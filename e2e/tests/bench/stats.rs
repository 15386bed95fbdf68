//! Medians of repeated runs: every figure of the report is one of these.

use loadgen::report::Latency;

/// Median, min and max of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Stat {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
    pub fn cell(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// Throughput and p99 over several runs, and the latency of the median run.
pub struct Measured {
    pub throughput: Stat,
    pub p50: Stat,
    pub p99: Stat,
    pub median_run: Latency,
}

pub fn measured(runs: &[Latency]) -> Measured {
    let throughput = Stat::of(runs.iter().map(|l| l.per_second).collect());
    let median_run = runs
        .iter()
        .min_by(|a, b| {
            (a.per_second - throughput.median)
                .abs()
                .total_cmp(&(b.per_second - throughput.median).abs())
        })
        .expect("at least one run")
        .clone();
    Measured {
        throughput,
        p50: Stat::of(runs.iter().map(|l| l.p50_ms).collect()),
        p99: Stat::of(runs.iter().map(|l| l.p99_ms).collect()),
        median_run,
    }
}
