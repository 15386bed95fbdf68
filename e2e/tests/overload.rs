//! Overload: more clients than the command's bounds, for 15 s.
//!
//! The command runs with a producer queue of 64 events and at most 200 connections, and 300
//! extra clients post as fast as they are answered on top of the steady load, so requests
//! arrive faster than the broker acknowledges them. (The defaults are 100 000 events and
//! 10 000 connections; the small bounds let this machine's clients outrun them.)
//!
//! Expected: the excess is answered `503` with `Retry-After`, by the full queue (the event
//! was not stored) or by the connection limit; nothing hangs (no request waits past the load
//! driver's answer timeout; the slowest answer is printed, not asserted); the command's
//! memory stays bounded; it does not crash and is ready afterwards; every `204` is counted.

use anyhow::{ensure, Result};
use e2e::driver::{verify, Load};
use e2e::http::Client;
use e2e::{metric, rss_bytes, Flags, Pipeline, PipelineOptions, Stack};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CLIENTS: u64 = 300;
/// Resident memory the command may add under overload. Its bounds cap the real need at a few
/// tens of MiB (64 queued events, 200 connections of at most 64 KiB of buffers each); the
/// margin is for the allocator. A leak per request would cross it within the run.
const RSS_GROWTH_LIMIT: u64 = 96 << 20;
/// Events the steady load has acknowledged before the command's memory is first read: its
/// connections, producer and buffers are in use, so the baseline is the command at work.
const WARM_UP_EVENTS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_load_is_refused_with_bounded_memory() -> Result<()> {
    let stack = Stack::start()?;
    eprintln!("overload: servers' logs in {}", stack.dir.display());
    let mut pipeline = Pipeline::start(
        &stack,
        PipelineOptions {
            command: Flags::args(&["--producer-max-queued", "64", "--max-connections", "200"]),
            processor: Flags::args(&["--flush-interval", "100ms"]),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let Pipeline { command, query, .. } = &mut pipeline;

    let load = Load::start(&command.addr(), &query.addr(), 4, 0x0ae7_10ad);
    load.wait_acknowledged(
        WARM_UP_EVENTS,
        Duration::from_secs(60),
        &format!("{WARM_UP_EVENTS} events of the steady load acknowledged before the burst"),
    )
    .await?;
    let rss_before = command.proc.rss_bytes().unwrap_or(0);

    // Sample the command's memory while the burst runs.
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), command.proc.pid());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let before = load.snapshot();
    load.burst(&command.addr(), CLIENTS, Duration::from_secs(15), 0x5eed)
        .await?;
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let after = load.snapshot();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "overload: {} acknowledged, {} refused during the burst; command RSS {} MiB before, {} MiB at peak; slowest answer {:?}",
        after.acknowledged - before.acknowledged,
        after.refused - before.refused,
        rss_before >> 20,
        peak >> 20,
        after.slowest
    );

    ensure!(
        command.proc.is_running(),
        "the command exited under overload"
    );
    let queue_full = metric(
        &command.addr(),
        "analytics_events_unavailable_total{cause=\"queue_full\"}",
    )
    .await?;
    let refused_connections =
        metric(&command.addr(), "analytics_http_connections_refused_total").await?;
    eprintln!(
        "overload: {queue_full} events refused by the full queue, {refused_connections} connections by the limit"
    );
    ensure!(
        queue_full > 0.0,
        "the producer queue never filled: no overload"
    );
    ensure!(
        refused_connections > 0.0,
        "the connection limit was never reached"
    );
    ensure!(
        after.acknowledged > before.acknowledged,
        "nothing acknowledged under overload"
    );
    ensure!(
        peak.saturating_sub(rss_before) < RSS_GROWTH_LIMIT,
        "the command's memory grew by {} MiB under overload",
        (peak - rss_before) >> 20
    );
    let mut c = Client::connect(&command.addr()).await?;
    let r = c.request("GET", "/readyz", &[]).await?;
    ensure!(
        r.status == 200,
        "command not ready after the overload: {}",
        r.body
    );

    let watched = load.watched.clone();
    let ledger = load.finish().await?;
    ledger.ensure_all_answered()?;
    verify(
        &stack,
        &query.addr(),
        &ledger,
        &watched,
        Duration::from_secs(120),
        "counts after the overload",
    )
    .await
}
