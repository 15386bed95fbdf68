//! The broker goes away under load and comes back: the scenario of `tests/broker_outage.rs`
//! (taken off the network by the relay, its process untouched) and `tests/broker_restart.rs`
//! (the process stopped or killed, then started again on its SQLite data).
//!
//! Expected each time: while the broker is away every POST is answered `503` with
//! `Retry-After` (none hangs, none is acknowledged) and GETs are still served; afterwards the
//! command accepts events again by itself, the processor and the materializer resume without
//! a restart, and at the end every hour is within the load driver's books (every `204`
//! counted exactly once).

use crate::driver::{verify, Load};
use crate::http::Client;
use crate::{Pipeline, PipelineOptions, Stack};
use anyhow::{ensure, Result};
use std::time::{Duration, Instant};

/// How the broker goes away.
#[derive(Debug, Clone, Copy)]
pub enum Loss {
    /// Off the network for this long ([`Stack::cut_broker`]); needs a relayed stack.
    Network(Duration),
    /// The process stopped (SIGTERM, or SIGKILL when `crash`) and started again after `down`;
    /// needs a persistent broker.
    Restart { crash: bool, down: Duration },
}

impl Loss {
    fn down(&self) -> Duration {
        match *self {
            Loss::Network(d) | Loss::Restart { down: d, .. } => d,
        }
    }
}

/// Requests in flight when the broker goes wait at most `--delivery-timeout` (5 s) for their
/// acknowledgement; after this long, nothing more may be acknowledged until it is back.
const SETTLE: Duration = Duration::from_secs(8);

/// Events acknowledged before each loss, and after the last one before the load stops: the
/// load flows through the command, not merely started (or restarted).
const FLOWING: u64 = 200;

/// How long the load may take to acknowledge [`FLOWING`] events.
const FLOWING_WITHIN: Duration = Duration::from_secs(60);

/// Runs the services under load on `stack`, inflicts each loss in turn, then checks the books.
pub async fn ride_out(stack: &mut Stack, losses: &[Loss], seed: u64) -> Result<()> {
    let Pipeline {
        mut command,
        mut processor,
        mut materializer,
        query,
        ..
    } = Pipeline::start(stack, PipelineOptions::default()).await?;

    let load = Load::start(&command.addr(), &query.addr(), 4, seed);
    for loss in losses {
        ensure!(loss.down() > SETTLE, "{loss:?}: shorter than {SETTLE:?}");
        load.wait_acknowledged(
            load.acknowledged() + FLOWING,
            FLOWING_WITHIN,
            &format!("{FLOWING} events acknowledged before {loss:?}"),
        )
        .await?;
        eprintln!("broker away: {loss:?}");
        match *loss {
            Loss::Network(_) => stack.cut_broker()?,
            Loss::Restart { crash, .. } => stack.stop_broker(crash),
        }
        // Not a condition: the bound under test. Whatever is still in flight must be
        // answered within it, and nothing acknowledged after it until the broker is back.
        tokio::time::sleep(SETTLE).await;
        let settled = load.snapshot();
        let mut reader = Client::connect(&query.addr()).await?;
        let now = analytics_model::clock::now_ms();
        let r = reader
            .request("GET", &format!("/analytics?timestamp={now}"), &[])
            .await?;
        ensure!(
            r.status == 200,
            "GET while the broker is away: {} {}",
            r.status,
            r.body
        );
        // Not a condition: the rest of the outage itself.
        tokio::time::sleep(loss.down() - SETTLE).await;
        let during = load.snapshot();
        match *loss {
            Loss::Network(_) => stack.restore_broker()?,
            Loss::Restart { .. } => stack.start_broker()?,
        }
        let back = Instant::now();
        eprintln!("broker back");
        ensure!(
            during.acknowledged == settled.acknowledged,
            "{} events acknowledged while the broker was away",
            during.acknowledged - settled.acknowledged
        );
        ensure!(
            during.refused > settled.refused + 100,
            "POSTs were not refused while the broker was away: {} refusals in {:?}",
            during.refused - settled.refused,
            loss.down() - SETTLE
        );
        // The command closes its breaker by itself (a liveness bound, not a speed target).
        load.wait_acknowledged(
            during.acknowledged + 1,
            Duration::from_secs(90),
            "an event acknowledged since the broker came back",
        )
        .await?;
        eprintln!("first 204 {:?} after the broker came back", back.elapsed());
    }
    load.wait_acknowledged(
        load.acknowledged() + FLOWING,
        FLOWING_WITHIN,
        &format!("{FLOWING} more events acknowledged after the broker came back"),
    )
    .await?;
    let watched = load.watched.clone();
    let ledger = load.finish().await?;
    eprintln!(
        "{} acknowledged, {} refused (not stored), {} unacknowledged 503s, {} without an answer, {} re-sends of events with ids; slowest answer {:?}",
        ledger.acknowledged, ledger.refused, ledger.unacknowledged, ledger.cut_off, ledger.retries, ledger.slowest
    );
    ledger.ensure_all_answered()?;
    for (name, s) in [
        ("command", &mut command),
        ("processor", &mut processor),
        ("materializer", &mut materializer),
    ] {
        ensure!(
            s.proc.is_running(),
            "{name} exited while the broker was away"
        );
    }
    verify(
        stack,
        &query.addr(),
        &ledger,
        &watched,
        Duration::from_secs(120),
        "counts after the broker came back",
    )
    .await?;
    crate::report_gaps(&processor, &materializer).await
}
