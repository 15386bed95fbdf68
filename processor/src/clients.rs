//! The processor's topics and Kafka clients, each configured from the flags in one place: the
//! idempotent producer (partials, changelog, dead letters), the changelog reader of restores,
//! and the group consumer of the events topic.

use crate::rebalance::ProcessorContext;
use crate::{metrics, publish, restore, Config, CLIENT_ID};
use analytics_kafka::client::{client_config, consumer_config, STATISTICS_INTERVAL_MS};
use analytics_kafka::producer::Recovering;
use analytics_kafka::topics::{events_retention, Topic};
use anyhow::{Context, Result};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use std::sync::Arc;
use std::time::Duration;

/// The producer every record of the processor goes through.
pub type Producer = Arc<Recovering<DefaultClientContext>>;

/// The topics the processor reads and writes, created if missing.
pub fn topics(config: &Config) -> [Topic; 4] {
    [
        Topic::Events {
            name: config.events.events_topic.clone(),
            retention: events_retention(&config.window),
        },
        Topic::Hourly {
            name: config.hourly.hourly_topic.clone(),
        },
        Topic::DeadLetter {
            name: config.dead_letter.dead_letter_topic.clone(),
        },
        Topic::Changelog {
            name: config.changelog.changelog_topic.clone(),
            retention: config.window.max_event_age + Duration::from_secs(2 * 86_400),
        },
    ]
}

/// The idempotent `acks=all` producer, replaced whole when the broker rejects its state.
pub fn producer(config: &Config, metrics: &metrics::Metrics) -> Result<Producer> {
    let mut c = client_config(&config.kafka, CLIENT_ID);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "10000")
        .set("request.timeout.ms", "10000");
    let replaced = metrics.producer_replacements.clone();
    let producer = Recovering::new(c, DefaultClientContext, replaced)
        .context("creating the Kafka producer")?;
    Ok(Arc::new(producer))
}

/// The changelog's reader and writer of restores; its fences name this process.
pub fn changelog_io(config: &Config, producer: Producer) -> Result<restore::ChangelogIo> {
    let reader: BaseConsumer = consumer_config(&config.kafka, "analytics-processor-restore")
        .set("group.id", format!("{}-restore", config.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the changelog reader")?;
    let owner = format!(
        "{}-{}",
        std::process::id(),
        analytics_model::clock::now_ms()
    );
    Ok(restore::ChangelogIo {
        producer,
        reader,
        topic: config.changelog.changelog_topic.clone(),
        owner,
        runtime: tokio::runtime::Handle::current(),
    })
}

/// The group consumer of the events topic: offsets committed by the pipeline only, after
/// the output is durable; its rebalances restore state through `context`.
pub fn consumer(
    config: &Config,
    context: ProcessorContext,
) -> Result<BaseConsumer<ProcessorContext>> {
    let session = config.session_timeout.as_millis();
    consumer_config(&config.kafka, CLIENT_ID)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 3).max(100).to_string())
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .create_with_context(context)
        .context("creating the Kafka consumer")
}

/// Where the pipeline publishes partials, changelog records and dead letters.
pub fn publisher(config: &Config, producer: Producer) -> publish::KafkaPublisher {
    publish::KafkaPublisher {
        producer,
        topics: publish::Topics {
            hourly: config.hourly.hourly_topic.clone(),
            changelog: config.changelog.changelog_topic.clone(),
            dead_letter: config.dead_letter.dead_letter_topic.clone(),
        },
        runtime: tokio::runtime::Handle::current(),
    }
}
