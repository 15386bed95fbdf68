//! Command-line/environment configuration shared by the services. Each service flattens
//! the groups it needs into its own `clap` parser; every flag is also an environment variable.

use clap::{Args, ValueEnum};
use std::time::Duration;

/// Parses durations such as `250ms`, `5s`, `5m`, `24h`, `30d` (a bare number means seconds).
///
/// Hand-written rather than `humantime`: every duration flag and env var has accepted a bare
/// number of seconds (`SHUTDOWN_TIMEOUT=5`) since the first release, which `humantime`
/// refuses ("time unit needed"), and the error names the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 250ms, 5s, 5m, 24h, 30d"))?;
    let ms_per = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// Longest lateness window the pipeline supports.
pub const MAX_EVENT_AGE_LIMIT: Duration = Duration::from_secs(30 * 86_400);

fn parse_event_age(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_EVENT_AGE_LIMIT {
        return Err("--max-event-age may be at most 30d".into());
    }
    if d < Duration::from_secs(3600) {
        return Err("--max-event-age must be at least 1h".into());
    }
    Ok(d)
}

/// The event-time window, read by command (to validate) and processor (to keep state).
/// Both must be given the same values.
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// Oldest event accepted, relative to the time it is received (lateness window, at most 30d).
    #[arg(long, env = "MAX_EVENT_AGE", default_value = "24h", value_parser = parse_event_age)]
    pub max_event_age: Duration,
    /// How far an event timestamp may be ahead of the receiving server's clock.
    #[arg(long, env = "MAX_FUTURE_SKEW", default_value = "5m", value_parser = parse_duration)]
    pub max_future_skew: Duration,
}

impl WindowArgs {
    pub fn max_event_age_ms(&self) -> i64 {
        self.max_event_age.as_millis() as i64
    }
    pub fn max_future_skew_ms(&self) -> i64 {
        self.max_future_skew.as_millis() as i64
    }
}

/// Name of the events topic: the command writes it, the processor reads it.
#[derive(Debug, Clone, Args)]
pub struct EventsTopicArg {
    /// Topic of accepted events (key = user id).
    #[arg(long, env = "EVENTS_TOPIC", default_value = "analytics.events")]
    pub events_topic: String,
}

/// Name of the hourly topic: the processor writes it, the materializer reads it.
#[derive(Debug, Clone, Args)]
pub struct HourlyTopicArg {
    /// Compacted topic of per-(hour, source partition) partial totals.
    #[arg(long, env = "HOURLY_TOPIC", default_value = "analytics.hourly")]
    pub hourly_topic: String,
}

/// Name of the dead-letter topic: the processor writes it.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterTopicArg {
    /// Topic receiving events that arrived for hours already evicted, or that could not be decoded.
    #[arg(
        long,
        env = "DEAD_LETTER_TOPIC",
        default_value = "analytics.dead-letter"
    )]
    pub dead_letter_topic: String,
}

/// Kafka connection, for every Kafka client of a service. Topic names are separate groups
/// ([`EventsTopicArg`], [`HourlyTopicArg`], [`DeadLetterTopicArg`]), so that each service
/// accepts only the topics it uses.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Partition count used when this service creates a missing topic. The events topic's
    /// partition count must never change once data exists (users would move partitions).
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 12)]
    pub topic_partitions: i32,
    /// Extra librdkafka settings as key=value (repeatable; comma-separated in the env var),
    /// e.g. security.protocol=SASL_SSL. Applied to every Kafka client of the service.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_options: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Redis connection.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL. Run Redis as a cache without persistence: after a restart it must be empty,
    /// never an older snapshot (it is rebuilt from PostgreSQL).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// Prefix of every Redis key written or read.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "analytics")]
    pub redis_key_prefix: String,
}

#[cfg(feature = "redis")]
impl RedisArgs {
    /// The store these flags name (connected on first use).
    pub fn store(&self) -> anyhow::Result<std::sync::Arc<crate::redis_store::RedisStore>> {
        use anyhow::Context;
        let store = crate::redis_store::RedisStore::new(&self.redis_url, &self.redis_key_prefix)
            .context("parsing --redis-url")?;
        Ok(std::sync::Arc::new(store))
    }
}

/// PostgreSQL connection.
#[derive(Debug, Clone, Args)]
pub struct PostgresArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/analytics"
    )]
    pub postgres_url: String,
}

#[cfg(feature = "postgres")]
impl PostgresArgs {
    /// The store these flags name (connected on first use), as `role`; `service` names the
    /// connection.
    pub fn store(
        &self,
        role: crate::pg::Role,
        service: &str,
    ) -> anyhow::Result<std::sync::Arc<crate::pg::PgStore>> {
        use anyhow::Context;
        let store = crate::pg::PgStore::new(&self.postgres_url, role, service)
            .context("parsing --postgres-url")?;
        Ok(std::sync::Arc::new(store))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging and process lifecycle.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Log output format (the level is set with RUST_LOG, default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Longest time to drain in-flight work after SIGINT/SIGTERM before exiting.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Most open HTTP connections; a connection beyond it gets one `503` and is closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Longest time a client may take to send a request's headers (and, with TLS, to finish
    /// the handshake); a slower client is disconnected. Also closes a keep-alive connection
    /// left idle that long.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn event_age_is_bounded() {
        assert!(parse_event_age("30d").is_ok());
        assert!(parse_event_age("31d").is_err());
        assert!(parse_event_age("30m").is_err());
    }
}
