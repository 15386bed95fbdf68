//! The materializer: consumes the compacted hourly topic and writes each partial to
//! PostgreSQL (long-term store) and Redis (hot read path, with TTLs).
//!
//! | module | job |
//! | --- | --- |
//! | [`intake`] | consumed records → write batch, offsets to commit, the offset-gap guard |
//! | [`sink`] | PostgreSQL-then-Redis writes with the offset guard, TTL policy |
//! | [`metrics`] | the service's metric families |
//! | this file | configuration, the batching consume loop, the admin endpoints |
//!
//! Delivery guarantee: at-least-once consumption made idempotent by the offset guard. A batch
//! is written to PostgreSQL, then to Redis, and only then are the consumer offsets committed
//! (offsets are held back while any Redis update is pending). Replays, duplicates and
//! reordering never move a stored number backwards, so any number of instances may run; no
//! partial is stepped over ([`intake`]).

pub mod intake;
pub mod metrics;
pub mod sink;

use anyhow::Context;
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use shared::config::{
    parse_duration, HourlyTopicArg, KafkaArgs, PostgresArgs, RedisArgs, RuntimeArgs,
};
use shared::http::Check;
use shared::pg::PgStore;
use shared::redis_store::RedisStore;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Writes hourly partials to PostgreSQL and Redis.
#[derive(Debug, Clone, Parser)]
#[command(name = "materializer", version)]
pub struct Config {
    /// Address of the admin HTTP listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8084")]
    pub listen: String,
    /// Consumer group of the materializer instances.
    #[arg(
        long,
        env = "MATERIALIZER_GROUP_ID",
        default_value = "analytics-materializer"
    )]
    pub group_id: String,
    /// Most partials per write batch.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 5000)]
    pub batch_size: usize,
    /// Longest wait to fill a batch after its first partial.
    #[arg(long, env = "BATCH_WAIT", default_value = "20ms", value_parser = parse_duration)]
    pub batch_wait: Duration,
    /// Redis keys of recent hours live until at least this long after the hour ends.
    #[arg(long, env = "REDIS_HOT_GRACE", default_value = "2h", value_parser = parse_duration)]
    pub redis_hot_grace: Duration,
    /// TTL of Redis keys of older hours (late writes).
    #[arg(long, env = "REDIS_COLD_TTL", default_value = "10m", value_parser = parse_duration)]
    pub redis_cold_ttl: Duration,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub hourly: HourlyTopicArg,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub postgres: PostgresArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

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
        shared::kafka::record_lag(&statistics, &self.topic, &self.metrics.lag);
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

struct AdminApp {
    pg: Arc<PgStore>,
    redis: Arc<RedisStore>,
    metrics: metrics::Metrics,
    assigned: Arc<AtomicBool>,
}

impl shared::http::App for AdminApp {
    async fn readiness(&self) -> Vec<Check> {
        let (pg, redis) = tokio::join!(self.pg.ping(), self.redis.ping());
        let assignment = if self.assigned.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("waiting for the first partition assignment".into())
        };
        vec![
            Check {
                name: "postgres",
                result: pg.map_err(|e| e.to_string()),
            },
            Check {
                name: "redis",
                result: redis.map_err(|e| e.to_string()),
            },
            Check {
                name: "assignment",
                result: assignment,
            },
        ]
    }

    fn registry(&self) -> &prometheus::Registry {
        &self.metrics.registry
    }

    fn http_metrics(&self) -> &shared::metrics::HttpMetrics {
        &self.metrics.http
    }
}

/// Runs the materializer until `cancel` fires.
pub async fn run(
    config: Config,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::new();
    let pg =
        Arc::new(PgStore::new(&config.postgres.postgres_url).context("parsing --postgres-url")?);
    let redis = Arc::new(
        RedisStore::new(&config.redis.redis_url, &config.redis.redis_key_prefix)
            .context("parsing --redis-url")?,
    );
    let assigned = Arc::new(AtomicBool::new(false));
    let app = Arc::new(AdminApp {
        pg: pg.clone(),
        redis: redis.clone(),
        metrics: metrics.clone(),
        assigned: assigned.clone(),
    });
    tracing::info!(addr = %listener.local_addr()?, "materializer admin listening");
    let server = {
        let (cancel, runtime) = (cancel.clone(), config.runtime.clone());
        tokio::spawn(async move { shared::http::serve(listener, app, cancel, &runtime).await })
    };
    let result = consume(&config, pg, redis, metrics, assigned, cancel.clone()).await;
    cancel.cancel();
    server.await?;
    result
}

async fn consume(
    config: &Config,
    pg: Arc<PgStore>,
    redis: Arc<RedisStore>,
    metrics: metrics::Metrics,
    assigned: Arc<AtomicBool>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    use shared::kafka::{ensure_topics_retrying, Topic};
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
        shared::kafka::consumer_config(&config.kafka, "analytics-materializer")
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false")
            .set(
                "statistics.interval.ms",
                shared::kafka::STATISTICS_INTERVAL_MS,
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
    let topic = config.hourly.hourly_topic.clone();
    let ttl = sink::TtlPolicy {
        hot_grace: config.redis_hot_grace,
        cold_ttl: config.redis_cold_ttl,
    };
    let mut sink = sink::Sink::new(pg, redis, ttl, metrics.clone());
    let mut intake = intake::Intake::new(topic.clone(), config.batch_size);
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
            intake.accept(&consumer, g, m, &metrics);
            let deadline = tokio::time::Instant::now() + config.batch_wait;
            while intake.batch.len() < config.batch_size {
                tokio::select! {
                    m = consumer.recv() => {
                        let g = generation.load(Ordering::Relaxed);
                        intake.accept(&consumer, g, m, &metrics);
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        let deduped = intake::dedupe_newest(intake.batch.drain(..));
        metrics.batch_size.observe(deduped.len() as f64);
        // PostgreSQL first, retried until it succeeds (on shutdown nothing is committed).
        let mut delay = Duration::from_millis(100);
        while let Err(e) = sink.write_postgres(&deduped).await {
            tracing::warn!(error = %e, "postgres write failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return Ok(()),
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        if sink.write_redis(&deduped).await && !intake.positions.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (&p, &o) in &intake.positions {
                tpl.add_partition_offset(&topic, p, Offset::Offset(o))?;
            }
            match consumer.commit(&tpl, CommitMode::Async) {
                Ok(()) => intake.positions.clear(),
                Err(e) => tracing::warn!(error = %e, "offset commit failed; will retry"),
            }
        }
    }
    tracing::info!("materializer stopped");
    Ok(())
}
