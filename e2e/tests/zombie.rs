//! A processor frozen (SIGSTOP) past its session timeout while events keep arriving loses
//! its partitions to another instance, which fences them in the changelog. Resumed, the
//! zombie flushes what it had: its late writes must change nothing. Then the other instance
//! is killed, so a new owner restores through the zombie's records: every hour stays exact.

use anyhow::{ensure, Result};
use e2e::forensics::Answers;
use e2e::workload::{dataset, post_recorded, Rng, Truth, HOUR};
use e2e::{Stack, MATERIALIZER_ARGS, PROCESSOR_ARGS};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_processor_cannot_corrupt_the_counts() -> Result<()> {
    let stack = Stack::start()?;
    let command = stack.service("command", &[])?;
    let zombie = stack.service("processor", PROCESSOR_ARGS)?;
    let mut other = stack.service("processor", PROCESSOR_ARGS)?;
    let materializer = stack.service("materializer", MATERIALIZER_ARGS)?;
    let query = stack.query()?;
    e2e::all_ready(&[&command, &zombie, &other, &materializer, &query]).await?;
    let now = analytics_model::clock::now_ms();
    let h0 = now.div_euclid(HOUR) * HOUR;
    let hours: Vec<i64> = (0..=3).map(|b| h0 - b * HOUR).collect();
    let answers = Answers {
        query: &query,
        hours: &hours,
    };
    let mut rng = Rng::seeded(7);
    let mut truth = Truth::default();
    let mut send = |n: usize| dataset(&mut rng, n, &[0, 0, 1, 3], analytics_model::clock::now_ms());

    let batch = send(2_000);
    post_recorded(&command.addr(), &batch, 4, &mut truth).await?;
    answers
        .exact(&stack, &truth, WAIT, "before the freeze")
        .await?;

    // Freeze past the session timeout while events arrive; the other instance takes over.
    zombie.proc.freeze(true);
    let batch = send(2_000);
    post_recorded(&command.addr(), &batch, 4, &mut truth).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    answers
        .exact(&stack, &truth, WAIT, "while the zombie is frozen")
        .await?;

    // Resumed, the zombie flushes stale state; more events arrive.
    zombie.proc.freeze(false);
    let batch = send(2_000);
    post_recorded(&command.addr(), &batch, 4, &mut truth).await?;
    answers
        .exact(&stack, &truth, WAIT, "after the zombie resumed")
        .await?;

    // The instance that fenced it dies: a new owner restores through the zombie's records.
    other.proc.kill9();
    let batch = send(2_000);
    post_recorded(&command.addr(), &batch, 4, &mut truth).await?;
    other = stack.service("processor", PROCESSOR_ARGS)?;
    other.wait_ready(Duration::from_secs(60)).await?;
    answers
        .exact(&stack, &truth, LONG, "after the fencing owner died")
        .await?;
    let restored = e2e::metric(
        &zombie.addr(),
        "analytics_processor_restore_changelog_records",
    )
    .await?
        + e2e::metric(
            &other.addr(),
            "analytics_processor_restore_changelog_records",
        )
        .await?;
    ensure!(
        restored > 0.0,
        "no partition was restored from the changelog"
    );
    Ok(())
}

const WAIT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(90);
