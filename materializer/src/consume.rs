//! The materializer's loop: fill a batch from the hourly topic (up to `--batch-size`
//! partials, or `--batch-wait` after the first one), write it to PostgreSQL (retried until it
//! succeeds), then to Redis, and only when Redis is up to date commit the batch's offsets.
//! Every second without records, Redis updates that failed are retried.
//!
//! Delivery guarantee: at-least-once. Nothing is committed before both stores hold the batch;
//! a crash replays from the last commit, and the stores' offset guard makes the replay
//! harmless.

use crate::intake::Intake;
use crate::{metrics, sink, Config};
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

pub async fn consume(
    config: &Config,
    pg: Arc<PgStore>,
    redis: Arc<RedisStore>,
    metrics: metrics::Metrics,
    assigned: Arc<AtomicBool>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    use analytics_kafka::topics::ensure_topics_retrying;
    use analytics_kafka::topics::Topic;
    let hourly = Topic::Hourly {
        name: config.hourly.hourly_topic.clone(),
    };
    if !ensure_topics_retrying(&config.kafka, &[hourly], &cancel).await {
        return Ok(());
    }
    let partitions = Arc::new(AtomicUsize::new(0));
    let generation = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let consumer: StreamConsumer<MaterializerContext> =
        analytics_kafka::client::consumer_config(&config.kafka, crate::CLIENT_ID)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false")
            .set(
                "statistics.interval.ms",
                analytics_kafka::client::STATISTICS_INTERVAL_MS,
            )
            .create_with_context(MaterializerContext {
                metrics: metrics.clone(),
                topic: config.hourly.hourly_topic.clone(),
                assigned: assigned.clone(),
                partitions: partitions.clone(),
                generation: generation.clone(),
            })
            .context("creating the Kafka consumer")?;
    consumer.subscribe(&[&config.hourly.hourly_topic])?;
    let ttl = sink::TtlPolicy {
        hot_grace: config.redis_hot_grace,
        cold_ttl: config.redis_cold_ttl,
    };
    let mut sink = sink::Sink::new(pg, redis, ttl, metrics.clone());
    let topic = config.hourly.hourly_topic.clone();
    let mut intake = Intake::new(topic, config.batch_size, metrics.offset_gaps.clone());
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
            let deadline = tokio::time::Instant::now() + config.batch_wait;
            while !intake.is_full() {
                tokio::select! {
                    m = consumer.recv() => {
                        let g = generation.load(Ordering::Relaxed);
                        intake.accept(&consumer, g, m, &metrics)?;
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        let deduped = intake.take_batch();
        metrics.batch_size.observe(deduped.len() as f64);
        // PostgreSQL first, retried until it succeeds (on shutdown nothing is committed).
        let mut backoff = Backoff::new(Duration::from_millis(100));
        while let Err(e) = sink.write_postgres(&deduped).await {
            tracing::warn!(error = %e, "postgres write failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = cancel.cancelled() => return Ok(()),
            }
        }
        if sink.write_redis(&deduped).await {
            intake.commit(&consumer);
        }
    }
    tracing::info!("materializer stopped");
    Ok(())
}
