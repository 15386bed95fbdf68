//! The Kafka flags of the services: the connection, and each topic's name as its own group so
//! that a service accepts only the topics it uses.

use clap::Args;

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

/// Name of the processor's changelog: the processor writes and restores from it, the
/// materializer reads its deltas into durable membership.
#[derive(Debug, Clone, Args)]
pub struct ChangelogTopicArg {
    /// Topic of the processor's state changelog (one partition per events partition).
    #[arg(
        long,
        env = "CHANGELOG_TOPIC",
        default_value = "analytics.processor-changelog"
    )]
    pub changelog_topic: String,
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
