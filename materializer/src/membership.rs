//! Durable membership for exact unique users over ranges: reads the deltas of the
//! processor's changelog (the users each (hour, partition) gained, as 128-bit hashes) into
//! the membership tables of [`analytics_store::membership`].
//!
//! A second consumer group (`{--group-id}.membership`) reads the changelog topic. Records
//! are taken in batches per partition; each batch is applied in one PostgreSQL transaction
//! that locks the partition's progress row, skips the offsets already applied, numbers the
//! new users ([`numbering`]), merges the hour and day sets and moves the progress past the
//! batch. Kafka offsets are committed afterwards, as a hint only: the progress row is the
//! position, so a replay after a crash, a rebalance, or a paused former owner of the
//! partition (a zombie) applies nothing twice and numbers every user the same way.
//!
//! Every delta of the log is applied, whichever processor epoch wrote it and whether a
//! checkpoint followed it or not: a delta only ever names users of events that are in the
//! events topic and that pass the processor's rules (which are functions of the log), so
//! the union of all deltas of an hour is exactly its users, however often a restore wrote
//! them again.
//!
//! Delivery guarantee: exactly-once effect in PostgreSQL (the progress row, updated in the
//! same transaction as the sets). The changelog is deleted by time (lateness window + 2
//! days): a materializer stopped for longer than that misses deltas, which is logged and
//! counted (`analytics_materializer_membership_gaps_total`).
//!
//! Every ten minutes the membership of hours older than `--membership-retention` (plus a
//! day, so that a query at the edge never sees a half-deleted day) is deleted.

pub mod numbering;

use crate::{metrics::Metrics, Config};
use analytics_kafka::client::consumer_config;
use analytics_model::changelog::Record;
use analytics_model::clock::now;
use analytics_model::hour::HourStart;
use analytics_runtime::backoff::Backoff;
use analytics_store::membership::{Progress, DAY_MS};
use analytics_store::pg::{PgError, PgStore};
use anyhow::Context;
use numbering::Numbering;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A partition's records of one batch: (offset, record).
type Records = Vec<(i64, Record)>;

/// Reads the changelog into membership until `cancel`; an undecodable record stops it
/// (with an error naming it) rather than be stepped over.
pub async fn run(
    config: &Config,
    pg: Arc<PgStore>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = consumer(config)?;
    let mut numbering: HashMap<i32, Numbering> = HashMap::new();
    let mut forget = tokio::time::interval(Duration::from_secs(600));
    loop {
        let batch = tokio::select! {
            batch = next_batch(&consumer, config) => batch?,
            _ = forget.tick() => {
                forget_old(&pg, config).await;
                continue;
            }
            _ = cancel.cancelled() => break,
        };
        let mut commit = TopicPartitionList::new();
        for (partition, records) in batch {
            let Some(&(last, _)) = records.last() else {
                continue;
            };
            let numbers = numbering.entry(partition).or_default();
            if !apply_retrying(&pg, partition, &records, numbers, &metrics, &cancel).await {
                return Ok(());
            }
            commit.add_partition_offset(
                &config.changelog.changelog_topic,
                partition,
                Offset::Offset(last + 1),
            )?;
        }
        if commit.count() > 0 {
            // A hint for where the next owner starts; the progress rows are the truth.
            let _ = consumer.commit(&commit, CommitMode::Async);
        }
    }
    Ok(())
}

fn consumer(config: &Config) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = consumer_config(&config.kafka, crate::CLIENT_ID)
        .set("group.id", format!("{}.membership", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the changelog consumer")?;
    consumer.subscribe(&[&config.changelog.changelog_topic])?;
    Ok(consumer)
}

/// Records of up to `--batch-size` (or `--batch-wait` after the first), by partition.
async fn next_batch(
    consumer: &StreamConsumer,
    config: &Config,
) -> anyhow::Result<BTreeMap<i32, Records>> {
    let mut batch: BTreeMap<i32, Records> = BTreeMap::new();
    let mut taken = 0;
    let mut deadline = None;
    while taken < config.batch_size {
        let received = match deadline {
            None => consumer.recv().await,
            Some(d) => match tokio::time::timeout_at(d, consumer.recv()).await {
                Ok(r) => r,
                Err(_) => break,
            },
        };
        let m = match received {
            Ok(m) => m,
            Err(e) => {
                // The processor creates the topic: until it has, the subscription says so.
                tracing::debug!(error = %e, "changelog consumer");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let record = Record::decode(m.payload().unwrap_or_default()).with_context(|| {
            format!(
                "changelog partition {} offset {}: membership stops rather than step over it",
                m.partition(),
                m.offset()
            )
        })?;
        batch
            .entry(m.partition())
            .or_default()
            .push((m.offset(), record));
        taken += 1;
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + config.batch_wait);
    }
    Ok(batch)
}

/// [`apply`], retried with backoff while PostgreSQL fails; false if `cancel` fired first.
async fn apply_retrying(
    pg: &PgStore,
    partition: i32,
    records: &Records,
    numbering: &mut Numbering,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(100));
    loop {
        match apply(pg, partition, records, numbering, metrics).await {
            Ok(()) => return true,
            Err(e) => tracing::warn!(error = %e, partition, "membership write failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = cancel.cancelled() => return false,
        }
    }
}

/// Applies the records not applied yet, in one transaction (module doc).
async fn apply(
    pg: &PgStore,
    partition: i32,
    records: &Records,
    numbering: &mut Numbering,
    metrics: &Metrics,
) -> Result<(), PgError> {
    let tx = pg.begin_membership().await?;
    let result = async {
        let progress = tx.lock(partition).await?;
        let fresh: Vec<&(i64, Record)> = records
            .iter()
            .filter(|(offset, _)| *offset >= progress.next_offset)
            .collect();
        metrics
            .membership_records_skipped
            .inc_by((records.len() - fresh.len()) as u64);
        let Some(&&(first, _)) = fresh.first() else {
            return Ok(None);
        };
        if progress.next_offset > 0 && first > progress.next_offset {
            tracing::warn!(partition, from = progress.next_offset, to = first, "changelog records deleted before membership read them: unique users over ranges may be low for their hours");
            metrics.membership_gaps.inc();
        }
        sync(&tx, partition, progress, numbering).await?;
        let deltas = fresh.iter().filter_map(|(_, r)| match r {
            Record::Delta { delta, .. } => Some((delta.hour, &delta.new_users[..])),
            _ => None,
        });
        let plan = numbering.plan(deltas);
        // Fences and checkpoints only (most batches between flushes): the progress moves.
        if !plan.hours.is_empty() {
            tx.append_users(partition, progress.users, &plan.new_users)
                .await?;
            tx.merge(partition, &plan.hours).await?;
        }
        let next = Progress {
            next_offset: fresh.last().expect("not empty").0 + 1,
            users: progress.users + plan.new_users.len() as u32,
        };
        tx.advance(partition, next).await?;
        metrics.membership_records.inc_by(fresh.len() as u64);
        Ok(Some(plan.new_users))
    }
    .await;
    match result {
        Ok(new_users) => {
            tx.commit().await?;
            numbering.adopt(new_users.unwrap_or_default());
            Ok(())
        }
        Err(e) => {
            tx.rollback().await;
            Err(e)
        }
    }
}

/// Brings the dictionary in memory to the stored one (another instance, or this one before
/// a failure, may have numbered users since).
async fn sync(
    tx: &analytics_store::membership::MembershipTx,
    partition: i32,
    progress: Progress,
    numbering: &mut Numbering,
) -> Result<(), PgError> {
    if numbering.len() > progress.users {
        *numbering = Numbering::default();
    }
    if numbering.len() < progress.users {
        numbering.extend(tx.users_since(partition, numbering.len()).await?);
    }
    Ok(())
}

/// Deletes membership past the retention (and a day), logging a failure.
async fn forget_old(pg: &PgStore, config: &Config) {
    let horizon = config.membership.horizon(now()).plus(-DAY_MS);
    let horizon = HourStart::containing(horizon).start();
    match pg.forget_membership_before(horizon).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(rows = n, before = %horizon, "deleted membership past its retention")
        }
        Err(e) => tracing::warn!(error = %e, "deleting old membership failed; retried later"),
    }
}
