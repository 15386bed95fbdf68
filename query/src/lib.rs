//! The query service: answers `GET /analytics?timestamp={ms}` with the totals of the UTC
//! hour containing the timestamp, as `unique_users,N\nclicks,N\nimpressions,N\n` (or JSON
//! with `Accept: application/json`), and `GET /analytics?from={ms}&to={ms}` with one row per
//! hour of the range (CSV, or a JSON array).
//!
//! | module | job |
//! | --- | --- |
//! | [`lookup`] | LRU cache → Redis → PostgreSQL, request coalescing, monotonic reads |
//! | [`app`] | the HTTP handler |
//! | [`range`] | parsing a range and enumerating its hours |
//! | [`calendar`] | a time zone's days, weeks and months as spans of UTC hours |
//! | [`grouped`] | `/analytics/total` and `interval`/`tz` rows: parsing and limits |
//! | [`body`] | the text, CSV and JSON answer bodies |
//! | [`page`] | the analytics page (`GET /`) and its assets, compiled in |
//! | [`metrics`] | the service's metric families |
//!
//! The service only reads (and writes PostgreSQL results back into Redis, whole); it never
//! acknowledges data, so it has no delivery guarantee of its own.

pub mod app;
pub mod body;
pub mod calendar;
pub mod grouped;
pub mod lookup;
pub mod metrics;
pub mod page;
pub mod range;

use analytics_edge::EdgeArgs;
use analytics_model::duration::parse_duration;
use analytics_runtime::config::RuntimeArgs;
use analytics_store::pg::{PostgresArgs, Role};
use analytics_store::redis_store::RedisArgs;
use anyhow::Result;
use clap::Parser;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves hourly analytics over HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "query", version, args_conflicts_with_subcommands = true)]
pub struct Config {
    /// Run a tool instead of the service (`keys new`).
    #[command(subcommand)]
    pub tool: Option<analytics_edge::keytool::Tool>,
    /// Address to listen on for HTTP.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: String,
    /// How long an answer for the current hour is reused from memory.
    #[arg(long, env = "CACHE_CURRENT_HOUR", default_value = "100ms", value_parser = parse_duration)]
    pub cache_current_hour: Duration,
    /// How long an answer for any other hour is reused from memory.
    #[arg(long, env = "CACHE_OTHER_HOURS", default_value = "5s", value_parser = parse_duration)]
    pub cache_other_hours: Duration,
    /// Most hours one `GET /analytics?from=&to=` may span (744 = 31 days).
    #[arg(long, env = "MAX_RANGE_HOURS", default_value_t = 744, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_range_hours: u32,
    /// Longest range of `/analytics/total`, and of `interval=day|week|month` rows (whole
    /// buckets), in days.
    #[arg(long, env = "MAX_TOTAL_DAYS", default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_total_days: u32,
    #[command(flatten)]
    pub membership: analytics_store::membership::MembershipArgs,
    /// TTL of a Redis key rebuilt from PostgreSQL by a read.
    #[arg(long, env = "REDIS_BACKFILL_TTL", default_value = "60s", value_parser = parse_duration)]
    pub redis_backfill_ttl: Duration,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub postgres: PostgresArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Serves the read API and the page on `listener` until `cancel` fires, then drains
/// in-flight requests.
pub async fn run(config: Config, listener: TcpListener, cancel: CancellationToken) -> Result<()> {
    let metrics = metrics::Metrics::default();
    let edge = analytics_edge::prepare(&config.edge, metrics.http.registry(), &listener).await?;
    let redis = config.redis.store()?;
    let pg = config.postgres.store(Role::Reader, "query")?;
    let policy = lookup::CachePolicy {
        current_hour: config.cache_current_hour,
        other_hours: config.cache_other_hours,
        backfill_ttl: config.redis_backfill_ttl,
    };
    let app = Arc::new(app::QueryApp {
        lookup: lookup::Lookup::new(redis.clone(), pg.clone(), policy, metrics.clone()),
        redis,
        pg,
        metrics,
        limits: grouped::Limits {
            max_range_hours: config.max_range_hours,
            max_total_days: config.max_total_days,
            membership: config.membership.clone(),
        },
    });
    tracing::info!(addr = %listener.local_addr()?, "query listening");
    edge.serve(listener, app, cancel, &config.runtime).await;
    tracing::info!("query stopped");
    Ok(())
}
