//! The materializer's loop: fill a batch from the hourly topic (up to `--batch-size`
//! partials, or `--batch-wait` after the first one), write it to PostgreSQL (retried until it
//! succeeds), then to Redis, and only when Redis is up to date commit the batch's offsets.
//! Every second without records, Redis updates that failed are retried.
//!
//! Delivery guarantee: at-least-once. Nothing is committed before both stores hold the batch;
//! a crash replays from the last commit, and the stores' offset guard makes the replay
//! harmless.

use crate::intake::{Intake, Refused};
use crate::{metrics, sink, Config};
use analytics_kafka::client::{consumer_config, STATISTICS_INTERVAL_MS};
use analytics_kafka::topics::{ensure_topics_retrying, Topic};
use analytics_model::event::Partial;
use analytics_runtime::backoff::Backoff;
use analytics_store::pg::PgStore;
use analytics_store::redis_store::RedisStore;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Consumer context: records lag from librdkafka statistics and the first assignment.
struct MaterializerContext {
    metrics: metrics::Metrics,
    topic: String,
    assigned: Arc<AtomicBool>,
    /// Partitions currently assigned (eager protocol: each assignment is the whole set).
    partitions: Arc<AtomicUsize>,
    /// Incremented by every rebalance.
    generation: Arc<AtomicU64>,
}

impl ClientContext for MaterializerContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        analytics_kafka::client::record_lag(&statistics, &self.topic, &self.metrics.lag);
    }
}

impl ConsumerContext for MaterializerContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.assigned.store(true, Ordering::Relaxed);
                self.partitions.store(tpl.count(), Ordering::Relaxed);
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(_) | Rebalance::Error(_) => {
                self.partitions.store(0, Ordering::Relaxed)
            }
        }
    }
}

/// Consumes the hourly topic into both stores until `cancel`; see the module doc.
pub async fn consume(
    config: &Config,
    pg: Arc<PgStore>,
    redis: Arc<RedisStore>,
    metrics: metrics::Metrics,
    assigned: Arc<AtomicBool>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let hourly = Topic::Hourly {
        name: config.hourly.hourly_topic.clone(),
    };
    if !ensure_topics_retrying(&config.kafka, &[hourly], &cancel).await {
        return Ok(());
    }
    let generation = Arc::new(AtomicU64::new(0));
    let consumer = consumer(config, &metrics, assigned, generation.clone())?;
    let ttl = sink::TtlPolicy {
        hot_grace: config.redis_hot_grace,
        cold_ttl: config.redis_cold_ttl,
    };
    let mut sink = sink::Sink::new(pg, redis, ttl, metrics.clone());
    let topic = config.hourly.hourly_topic.clone();
    let mut intake = Intake::new(topic, config.batch_size, metrics.offset_gaps.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        // Wait for a first record; every second, retry pending Redis updates.
        let first = tokio::select! {
            m = consumer.recv() => Some(m),
            _ = tick.tick() => {
                if sink.pending_hours() == 0 {
                    continue;
                }
                None
            }
            _ = cancel.cancelled() => break,
        };
        if let Some(m) = first {
            let g = generation.load(Ordering::Relaxed);
            intake.accept(&consumer, g, m, &metrics)?;
            fill(
                &consumer,
                &mut intake,
                &generation,
                config.batch_wait,
                &metrics,
            )
            .await?;
        }
        let batch = intake.take_batch();
        metrics.batch_size.observe(batch.len() as f64);
        if !write_postgres(&sink, &batch, &cancel).await {
            return Ok(());
        }
        if sink.write_redis(&batch).await {
            intake.commit(&consumer);
        }
    }
    tracing::info!("materializer stopped");
    Ok(())
}

/// The group consumer of the hourly topic: offsets committed by the loop only, once both
/// stores hold the batch. Its rebalances set `assigned` and count in `generation`.
fn consumer(
    config: &Config,
    metrics: &metrics::Metrics,
    assigned: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
) -> anyhow::Result<StreamConsumer<MaterializerContext>> {
    let context = MaterializerContext {
        metrics: metrics.clone(),
        topic: config.hourly.hourly_topic.clone(),
        assigned,
        partitions: Arc::new(AtomicUsize::new(0)),
        generation,
    };
    let consumer: StreamConsumer<MaterializerContext> =
        consumer_config(&config.kafka, crate::CLIENT_ID)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
            .create_with_context(context)
            .context("creating the Kafka consumer")?;
    consumer.subscribe(&[&config.hourly.hourly_topic])?;
    Ok(consumer)
}

/// Takes records into the batch until it is full or `wait` has passed.
async fn fill(
    consumer: &StreamConsumer<MaterializerContext>,
    intake: &mut Intake,
    generation: &AtomicU64,
    wait: Duration,
    metrics: &metrics::Metrics,
) -> Result<(), Refused> {
    let deadline = tokio::time::Instant::now() + wait;
    while !intake.is_full() {
        tokio::select! {
            m = consumer.recv() => {
                let g = generation.load(Ordering::Relaxed);
                intake.accept(consumer, g, m, metrics)?;
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(())
}

/// Writes the batch to PostgreSQL, retried with backoff until it succeeds; false if `cancel`
/// fired first (nothing is committed then).
async fn write_postgres(sink: &sink::Sink, batch: &[Partial], cancel: &CancellationToken) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(100));
    while let Err(e) = sink.write_postgres(batch).await {
        tracing::warn!(error = %e, "postgres write failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = cancel.cancelled() => return false,
        }
    }
    true
}
