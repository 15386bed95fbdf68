//! The materializer: consumes the compacted hourly topic and writes each partial to
//! PostgreSQL (long-term store) and Redis (hot read path, with TTLs).
//!
//! | module | job |
//! | --- | --- |
//! | [`consume`] | the batching consume loop: batch, write PostgreSQL then Redis, commit |
//! | [`intake`] | consumed records → write batch, offsets to commit, the offset-gap guard |
//! | [`sink`] | PostgreSQL-then-Redis writes with the offset guard, TTL policy |
//! | [`membership`] | the processor changelog's deltas → the users of each hour in PostgreSQL |
//! | [`metrics`] | the service's metric families |
//! | this file | configuration, the admin endpoints, wiring |
//!
//! Delivery guarantee: at-least-once consumption made idempotent by the offset guard. A batch
//! is written to PostgreSQL, then to Redis, and only then are the consumer offsets committed
//! (offsets are held back while any Redis update is pending). Replays, duplicates and
//! reordering never move a stored number backwards, so any number of instances may run; no
//! partial is stepped over ([`intake`]). Membership is exactly-once in effect, by a progress
//! row written with it ([`membership`]).

pub mod consume;
pub mod intake;
pub mod membership;
pub mod metrics;
pub mod sink;

use analytics_http::{Check, WAITING_FOR_ASSIGNMENT};
use analytics_kafka::args::{ChangelogTopicArg, HourlyTopicArg, KafkaArgs};
use analytics_model::duration::parse_duration;
use analytics_runtime::config::RuntimeArgs;
use analytics_store::membership::MembershipArgs;
use analytics_store::pg::{PgStore, PostgresArgs, Role};
use analytics_store::redis_store::{RedisArgs, RedisStore};
use anyhow::Result;
use clap::Parser;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The Kafka client id of every materializer, and the default consumer group.
pub const CLIENT_ID: &str = "analytics-materializer";

/// Writes hourly partials to PostgreSQL and Redis.
#[derive(Debug, Clone, Parser)]
#[command(name = "materializer", version)]
pub struct Config {
    /// Address of the admin HTTP listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8084")]
    pub listen: String,
    /// Consumer group of the materializer instances.
    #[arg(long, env = "MATERIALIZER_GROUP_ID", default_value = CLIENT_ID)]
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
    pub changelog: ChangelogTopicArg,
    #[command(flatten)]
    pub membership: MembershipArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub postgres: PostgresArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

struct AdminApp {
    pg: Arc<PgStore>,
    redis: Arc<RedisStore>,
    metrics: metrics::Metrics,
    assigned: Arc<AtomicBool>,
}

impl analytics_http::App for AdminApp {
    /// No routes of its own: nothing is ever asked.
    type Asked = std::convert::Infallible;

    async fn readiness(&self) -> Vec<Check> {
        let (pg, redis) = tokio::join!(self.pg.ping(), self.redis.ping());
        let assigned = self.assigned.load(Ordering::Relaxed);
        vec![
            Check::new("postgres", pg),
            Check::new("redis", redis),
            Check::when("assignment", assigned, WAITING_FOR_ASSIGNMENT),
        ]
    }

    fn metrics(&self) -> &analytics_http::HttpMetrics {
        &self.metrics.http
    }
}

/// Consumes the hourly topic into PostgreSQL and Redis, with its admin endpoints on
/// `listener`, until `cancel` fires (a batch in hand is finished first, unless PostgreSQL is
/// down: then it is left uncommitted, to be replayed).
pub async fn run(config: Config, listener: TcpListener, cancel: CancellationToken) -> Result<()> {
    let metrics = metrics::Metrics::default();
    let pg = config.postgres.store(Role::Writer, "materializer")?;
    let redis = config.redis.store()?;
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
        tokio::spawn(async move {
            analytics_http::serve(
                listener,
                app,
                analytics_http::Surface::internal(),
                cancel,
                &runtime,
            )
            .await
        })
    };
    let membership = {
        // A connection of its own: its transactions must not interleave with the batches'.
        let pg = config
            .postgres
            .store(Role::Writer, "materializer-membership")?;
        let (config, metrics, cancel) = (config.clone(), metrics.clone(), cancel.clone());
        tokio::spawn(async move {
            let result = membership::run(&config, pg, metrics, cancel.clone()).await;
            cancel.cancel();
            result
        })
    };
    let result = consume::consume(&config, pg, redis, metrics, assigned, cancel.clone()).await;
    cancel.cancel();
    server.await?;
    result.and(membership.await?)
}
