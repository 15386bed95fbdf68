//! The broker goes away for 30 s under load, then comes back (taken off the network by
//! `e2e::relay`: every connection cut, new ones refused, its data kept).
//!
//! Expected: while it is away, every POST is answered `503` with `Retry-After` (none hangs,
//! none is acknowledged) and GETs are still served; afterwards the command accepts events
//! again by itself, the processor and the materializer resume without a restart, and every
//! hour ends within the load driver's books (every `204` counted exactly once).

use anyhow::{ensure, Result};
use e2e::driver::{verify, Load};
use e2e::http::Client;
use e2e::{Stack, MATERIALIZER_ARGS, PROCESSOR_ARGS};
use std::time::{Duration, Instant};

const OUTAGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_rides_out_a_broker_outage() -> Result<()> {
    let stack = Stack::start_relayed()?;
    eprintln!("broker outage: servers' logs in {}", stack.dir.display());
    let mut command = stack.service("command", &[])?;
    let mut processor = stack.service("processor", PROCESSOR_ARGS)?;
    let mut materializer = stack.service("materializer", MATERIALIZER_ARGS)?;
    let query = stack.query()?;
    e2e::all_ready(&[&command, &processor, &materializer, &query]).await?;

    let load = Load::start(&command.addr(), &query.addr(), 4, 0x0b7a_6e00);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = load.snapshot();
    ensure!(
        before.acknowledged > 0,
        "nothing acknowledged before the outage"
    );

    eprintln!("broker off the network for {OUTAGE:?}");
    stack.cut_broker()?;
    // Requests in flight at the cut wait at most --delivery-timeout (5 s) for their ack.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let settled = load.snapshot();
    let mut reader = Client::connect(&query.addr()).await?;
    let now = shared::clock::now_ms();
    let r = reader
        .request("GET", &format!("/analytics?timestamp={now}"), &[])
        .await?;
    ensure!(
        r.status == 200,
        "GET during the outage: {} {}",
        r.status,
        r.body
    );
    tokio::time::sleep(OUTAGE - Duration::from_secs(8)).await;
    let during = load.snapshot();
    stack.restore_broker()?;
    eprintln!("broker back");
    ensure!(
        during.acknowledged == settled.acknowledged,
        "{} events acknowledged while the broker was unreachable",
        during.acknowledged - settled.acknowledged
    );
    ensure!(
        during.refused > settled.refused + 100,
        "POSTs were not refused while the broker was away: {} refusals in {:?}",
        during.refused - settled.refused,
        OUTAGE - Duration::from_secs(8)
    );

    // The command closes its breaker by itself and the pipeline resumes.
    let deadline = Instant::now() + Duration::from_secs(90);
    while load.snapshot().acknowledged == during.acknowledged {
        ensure!(
            Instant::now() < deadline,
            "no event acknowledged since the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let watched = load.watched.clone();
    let ledger = load.finish().await?;
    eprintln!(
        "broker outage: {} acknowledged, {} refused (not stored), {} unacknowledged 503s, {} without an answer; slowest answer {:?}",
        ledger.acknowledged, ledger.refused, ledger.unacknowledged, ledger.cut_off, ledger.slowest
    );
    ledger.ensure_all_answered()?;
    for (name, s) in [
        ("command", &mut command),
        ("processor", &mut processor),
        ("materializer", &mut materializer),
    ] {
        ensure!(s.proc.is_running(), "{name} exited during the outage");
    }
    verify(
        &stack,
        &query.addr(),
        &ledger,
        &watched,
        Duration::from_secs(120),
        "counts after the broker outage",
    )
    .await
}
