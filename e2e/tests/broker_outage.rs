//! The broker goes away for 30 s under load, then comes back: taken off the network by
//! `e2e::relay` (every connection cut, new ones refused, its process and data untouched).
//! The expectations are those of `e2e::outage`.

use anyhow::Result;
use e2e::outage::{ride_out, Loss};
use e2e::Stack;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_rides_out_a_broker_outage() -> Result<()> {
    let mut stack = Stack::start_relayed()?;
    eprintln!("broker outage: servers' logs in {}", stack.dir.display());
    ride_out(
        &mut stack,
        &[Loss::Network(Duration::from_secs(30))],
        0x0b7a_6e00,
    )
    .await
}
