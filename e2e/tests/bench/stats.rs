//! Medians of repeated runs: every figure of the report is one of these.

use loadgen::report::Latency;

/// Median, min and max of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// The quartiles: the middle half of the sample lies between them.
    pub q1: f64,
    pub q3: f64,
}

impl Stat {
    pub fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Stat {
            median: v[n / 2],
            min: v[0],
            max: v[n - 1],
            q1: v[n / 4],
            q3: v[(3 * n) / 4],
        }
    }
    /// `median (middle half q1–q3, all min–max)`: for the many short GET pairs, whose
    /// extremes say more about the machine's neighbours than about the servers.
    pub fn cell_quartiles(&self, decimals: usize) -> String {
        format!(
            "{:.d$} (middle half {:.d$}–{:.d$}, all {:.d$}–{:.d$})",
            self.median,
            self.q1,
            self.q3,
            self.min,
            self.max,
            d = decimals
        )
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
