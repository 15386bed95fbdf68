//! A processor frozen (SIGSTOP) past its session timeout while events keep arriving loses
//! its partitions to another instance, which fences them in the changelog. Resumed, the
//! zombie flushes what it had: its late writes must change nothing. Then the other instance
//! is killed, so a new owner restores through the zombie's records: every hour stays exact.

use anyhow::{ensure, Context, Result};
use e2e::forensics::Answers;
use e2e::workload::{dataset, post_recorded, Rng, Truth, HOUR};
use e2e::{Pipeline, PipelineOptions, Service, Stack, PROCESSOR_ARGS};
use std::collections::BTreeSet;
use std::time::Duration;

/// What the processor logs once it holds and has restored a new assignment
/// (`processor/src/rebalance.rs`), followed by the partitions: `partitions=[0, 1, ...]`.
const ASSIGNED: &str = "partitions assigned and restored";

/// The partitions of every assignment `processor` has logged, oldest first.
fn assignments(processor: &Service) -> Vec<BTreeSet<i32>> {
    processor
        .proc
        .output()
        .lines()
        .filter_map(|line| {
            let (_, fields) = line.split_once(ASSIGNED)?;
            let (_, list) = fields.split_once('[')?;
            let (list, _) = list.split_once(']')?;
            Some(
                list.split(',')
                    .filter_map(|p| p.trim().parse::<i32>().ok())
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_processor_cannot_corrupt_the_counts() -> Result<()> {
    let stack = Stack::start()?;
    let mut pipeline = Pipeline::start(&stack, PipelineOptions::processors(2)).await?;
    let Pipeline {
        command,
        processor: zombie,
        more_processors,
        query,
        ..
    } = &mut pipeline;
    let other = more_processors.first_mut().context("a second processor")?;
    let now = analytics_model::clock::now_ms();
    let h0 = now.div_euclid(HOUR) * HOUR;
    let hours: Vec<i64> = (0..=3).map(|b| h0 - b * HOUR).collect();
    let answers = Answers {
        query,
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

    // Freeze past the session timeout while events arrive; the other instance takes over:
    // the group drops the silent member and the other restores (fences) what it held.
    let held = assignments(zombie)
        .pop()
        .context("the zombie never logged an assignment")?;
    ensure!(!held.is_empty(), "the zombie held no partition to lose");
    let other_before = assignments(other).len();
    zombie.proc.freeze(true);
    let batch = send(2_000);
    post_recorded(&command.addr(), &batch, 4, &mut truth).await?;
    e2e::wait_for(
        &format!("the other processor took over the frozen one's partitions {held:?}"),
        WAIT,
        || {
            let since: Vec<_> = assignments(other).into_iter().skip(other_before).collect();
            std::future::ready(if since.iter().any(|a| a.is_superset(&held)) {
                Ok(Some(()))
            } else {
                Err(anyhow::anyhow!(
                    "the other's assignments since the freeze: {since:?}"
                ))
            })
        },
    )
    .await?;
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
    *other = stack.service("processor", PROCESSOR_ARGS)?;
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
