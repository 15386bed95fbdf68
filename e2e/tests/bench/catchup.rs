//! Section 9: catching up after an outage. On a stack of its own, with the processor stopped,
//! a backlog equal to `BENCH_CATCHUP_SECONDS` (default 600) of batch ingest at the rate row 7
//! measured is written to the events topic; then the processor starts, and the section times
//! how long until every hour of the backlog is exact in `GET /analytics` (the ground truth is
//! kept while the backlog is written).

use anyhow::{ensure, Result};
use e2e::workload::{get_hour, Truth};
use e2e::{Pipeline, PipelineOptions, Stack};
use loadgen::traffic::Shape;
use std::time::{Duration, Instant};

/// What section 9 measured.
pub struct CatchUp {
    pub events: u64,
    /// From the processor's start to the last hour exact.
    pub seconds: f64,
    /// Events per second over that time.
    pub rate: f64,
}

pub async fn measure(events: u64, shape: Shape) -> Result<CatchUp> {
    eprintln!("9. catch-up: a backlog of {events} events for a stopped processor");
    let stack = Stack::start()?;
    let mut pipeline = Pipeline::spawn(&stack, PipelineOptions::default())?;
    for s in pipeline.services() {
        s.wait_ready(Duration::from_secs(120)).await?;
    }
    let code = pipeline.processor.proc.terminate(Duration::from_secs(30));
    ensure!(code == Some(0), "processor did not stop cleanly");
    let mut truth = Truth::default();
    let written = Instant::now();
    loadgen::kafka::produce_recorded(
        &stack.kafka_brokers(),
        "analytics.events",
        events,
        20_000,
        50,
        shape,
        9,
        |p| truth.add(p),
    )
    .await?;
    eprintln!("  written in {:.0} s", written.elapsed().as_secs_f64());
    let started = Instant::now();
    pipeline.processor = stack.service("processor", &[])?;
    let mut client = e2e::http::Client::connect(&pipeline.query.addr()).await?;
    let hours: Vec<i64> = truth.hours.keys().copied().collect();
    let mut pending = hours.clone();
    while !pending.is_empty() {
        ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "hours {pending:?} still not exact after an hour"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut still = Vec::new();
        for &hour in &pending {
            let got = get_hour(&mut client, hour).await.ok();
            if got != Some(truth.totals(hour)) {
                still.push(hour);
            }
        }
        pending = still;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "  every one of {} hours exact {seconds:.1} s after the processor started",
        hours.len()
    );
    Ok(CatchUp {
        events,
        seconds,
        rate: events as f64 / seconds,
    })
}
