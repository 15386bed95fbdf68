//! The broker process is stopped under load and started again on its SQLite data, twice:
//! once with SIGTERM (a clean stop), once with SIGKILL (a crash). The expectations are those
//! of `e2e::outage`: `503` while it is down, `204` again soon after, and every acknowledged
//! event counted exactly once at the end.

use anyhow::Result;
use e2e::outage::{ride_out, Loss};
use e2e::{Options, Stack};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_survives_broker_restarts() -> Result<()> {
    let mut stack = Stack::start_with(Options {
        persistent_broker: true,
        ..Options::default()
    })?;
    eprintln!("broker restart: servers' logs in {}", stack.dir.display());
    let down = Duration::from_secs(15);
    ride_out(
        &mut stack,
        &[
            Loss::Restart { crash: false, down },
            Loss::Restart { crash: true, down },
        ],
        0x0b7a_6e01,
    )
    .await
}
