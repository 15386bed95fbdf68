//! Sections 4 and 6: a backlog of events for a stopped processor, read by a bare consumer and
//! then by the processor, and the processor's memory per tracked (hour, user) pair.

use crate::shape;
use anyhow::{ensure, Result};
use e2e::{Service, Stack};
use loadgen::traffic::Shape;
use std::time::{Duration, Instant};

/// What sections 4 and 6 measured.
pub struct Backlog {
    /// Events per second of the bare consumer.
    pub bare: f64,
    /// Events per second of the processor over the same backlog.
    pub processor_rate: f64,
    /// RSS growth per tracked pair, in bytes.
    pub per_pair: f64,
    pub pairs: f64,
    pub rss: f64,
}

async fn metric(s: &Service, name: &str) -> Result<f64> {
    e2e::metric(&s.addr(), name).await
}

/// Stops `processor`, writes `backlog` events, times a bare consumer over them, then starts a
/// new processor in its place and times it over the same events.
pub async fn measure(stack: &Stack, processor: &mut Service, backlog: u64) -> Result<Backlog> {
    eprintln!("4. backlog of {backlog} events (processor stopped)");
    let code = processor.proc.terminate(Duration::from_secs(30));
    ensure!(code == Some(0), "processor did not stop cleanly");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let produce_started = Instant::now();
    loadgen::kafka::produce(
        &stack.kafka_brokers(),
        "analytics.events",
        backlog,
        20_000,
        50,
        Shape {
            users: 2_000_000,
            zipf: 0.0,
            ..shape("backlog", 0, 0.95)
        },
        7,
    )
    .await?;
    eprintln!(
        "  produced in {:.0} s",
        produce_started.elapsed().as_secs_f64()
    );
    let brokers = stack.kafka_brokers();
    let bare = tokio::task::spawn_blocking(move || {
        loadgen::kafka::consume(
            &brokers,
            "analytics.events",
            backlog,
            Duration::from_secs(1800),
        )
    })
    .await??;
    eprintln!("  bare consumer: {bare:.0}/s");
    *processor = stack.service("processor", &[])?;
    let consumed_before;
    let rss_before;
    let pairs_before;
    let t0 = Instant::now();
    loop {
        // The counters are live once the admin port answers.
        if let (Ok(c), Ok(r), Ok(p)) = (
            metric(processor, "analytics_processor_events_consumed_total").await,
            metric(processor, "process_resident_memory_bytes").await,
            metric(processor, "analytics_processor_tracked_users").await,
        ) {
            consumed_before = c;
            rss_before = r;
            pairs_before = p;
            break;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "processor metrics unavailable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Timed from the first event the processor counts to the last, like the bare consumer.
    let mut consumed = consumed_before;
    while consumed <= consumed_before {
        ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "the processor did not start consuming"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        consumed = metric(processor, "analytics_processor_events_consumed_total").await?;
    }
    let consume_started = Instant::now();
    while consumed - consumed_before < backlog as f64 {
        ensure!(
            consume_started.elapsed() < Duration::from_secs(1800),
            "processor consumed {} of {backlog}",
            consumed - consumed_before
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        consumed = metric(processor, "analytics_processor_events_consumed_total").await?;
    }
    let processor_rate = backlog as f64 / consume_started.elapsed().as_secs_f64();
    eprintln!("  processor: {processor_rate:.0}/s");
    // Memory once the backlog is in: all RSS growth since the processor started (fetch
    // buffers and allocator slack included, so an upper bound), per tracked pair.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = metric(processor, "process_resident_memory_bytes").await?;
    let pairs = metric(processor, "analytics_processor_tracked_users").await?;
    let per_pair = (rss - rss_before) / (pairs - pairs_before).max(1.0);
    eprintln!("  memory: {per_pair:.1} bytes per pair ({pairs} pairs, RSS {rss})");
    Ok(Backlog {
        bare,
        processor_rate,
        per_pair,
        pairs,
        rss,
    })
}
