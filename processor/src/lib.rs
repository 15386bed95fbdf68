//! The processor: consumes the events topic and keeps exact per-hour aggregates (unique
//! users, clicks, impressions) per source partition, publishing absolute partials to the
//! compacted hourly topic.
//!
//! | module | job |
//! | --- | --- |
//! | [`rules`] | the deterministic event-time rules (closed hours, the dedup window) |
//! | [`state`] | per-partition hour state: counts, user sets, dead letters, eviction |
//! | [`seen`] | remembered (user, id) pairs: an event with an id counts once per dedup window |
//! | [`hashed`] | sets of 128-bit hashes (the users of an hour) |
//! | [`pairs`] | a dense sorted set of 128-bit hashes (the remembered pairs) |
//! | [`changelog`] | the fenced state changelog: record format and the restore fold |
//! | [`restore`] | where a partition's replay starts; its `changelog_io` submodule, fences and the fold of the changelog |
//! | [`rebalance`] | the rebalance hook: fence and restore before partitions are assigned |
//! | [`pipeline`] | the consume → aggregate loop; its `flush` submodule, the two-phase flush (publish, checkpoint, commit) |
//! | [`publish`] | where each record goes, the Kafka publisher and the one retry policy |
//! | [`clients`] | the processor's topics and Kafka clients, configured from its flags |
//! | [`memory`] | large buffers returned to the system once freed |
//! | [`metrics`] | the service's metric families |
//!
//! Delivery guarantee: effectively exactly-once into the read model. Partials are published
//! and acknowledged before a changelog checkpoint names their offsets; a restore resumes at
//! the last checkpoint and replays produce identical partials, which the materializer's
//! offset guard ignores. Dead-letter records are at-least-once.

pub mod changelog;
pub mod clients;
pub mod hashed;
pub mod memory;
pub mod metrics;
pub mod pairs;
pub mod pipeline;
pub mod publish;
pub mod rebalance;
pub mod restore;
pub mod rules;
pub mod seen;
pub mod state;

use analytics_http::{Check, WAITING_FOR_ASSIGNMENT};
use analytics_kafka::args::{
    ChangelogTopicArg, DeadLetterTopicArg, EventsTopicArg, HourlyTopicArg, KafkaArgs,
};
use analytics_model::duration::parse_duration;
use analytics_model::window::WindowArgs;
use analytics_runtime::config::RuntimeArgs;
use anyhow::{Context, Result};
use clap::Parser;
use rdkafka::consumer::BaseConsumer;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The Kafka client id of every processor, and the default consumer group.
pub const CLIENT_ID: &str = "analytics-processor";

/// Aggregates events into exact per-hour partials.
#[derive(Debug, Clone, Parser)]
#[command(name = "processor", version)]
pub struct Config {
    /// Address of the admin HTTP listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8083")]
    pub listen: String,
    /// Consumer group of the processor instances.
    #[arg(long, env = "PROCESSOR_GROUP_ID", default_value = CLIENT_ID)]
    pub group_id: String,
    /// How often changed partials are published (and offsets committed) while events keep
    /// coming; once the processor has caught up, a change is published at once (at most every
    /// 20 ms).
    #[arg(long, env = "FLUSH_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// Consumer session timeout: how long a silent instance keeps its partitions.
    #[arg(long, env = "SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// How often state changes are appended to the changelog with a checkpoint. A restore
    /// replays at most this much of the events behind the last checkpoint.
    #[arg(long, env = "CHECKPOINT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// How long an event id is remembered: a second event with the same (user, id) within
    /// it is acknowledged and not counted. At most --max-event-age.
    #[arg(long, env = "DEDUP_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub dedup_window: Duration,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub events: EventsTopicArg,
    #[command(flatten)]
    pub hourly: HourlyTopicArg,
    #[command(flatten)]
    pub changelog: ChangelogTopicArg,
    #[command(flatten)]
    pub dead_letter: DeadLetterTopicArg,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

struct AdminApp {
    partitions: Arc<rebalance::Partitions>,
    metrics: metrics::Metrics,
}

impl analytics_http::App for AdminApp {
    /// No routes of its own: nothing is ever asked.
    type Asked = std::convert::Infallible;

    async fn readiness(&self) -> Vec<Check> {
        let assigned = self.partitions.assigned_once.load(Ordering::Relaxed);
        let restoring = self.partitions.restoring();
        vec![
            Check::when("assignment", assigned, WAITING_FOR_ASSIGNMENT),
            Check::when(
                "restore",
                restoring.is_empty(),
                format!("restoring partitions {restoring:?}"),
            ),
        ]
    }

    fn metrics(&self) -> &analytics_http::HttpMetrics {
        &self.metrics.http
    }
}

/// Creates the topics it needs, then aggregates events on its own thread, with its admin
/// endpoints on `listener`, until `cancel` fires; then flushes and commits what is durable.
pub async fn run(config: Config, listener: TcpListener, cancel: CancellationToken) -> Result<()> {
    let topics = clients::topics(&config);
    if !analytics_kafka::topics::ensure_topics_retrying(&config.kafka, &topics, &cancel).await {
        return Ok(());
    }
    let rules = event_rules(&config)?;
    let partitions = Arc::new(rebalance::Partitions::new());
    let metrics = metrics::Metrics::default();
    let producer = clients::producer(&config, &metrics)?;
    let context = rebalance::ProcessorContext {
        partitions: partitions.clone(),
        topic: config.events.events_topic.clone(),
        rules,
        cancel: cancel.clone(),
        metrics: metrics.clone(),
        changelog: clients::changelog_io(&config, producer.clone())?,
    };
    let consumer = clients::consumer(&config, context)?;
    let pipeline = pipeline::Pipeline::new(
        Box::new(clients::publisher(&config, producer)),
        partitions.clone(),
        rules,
        metrics.clone(),
        pipeline::PipelineSettings {
            events_topic: config.events.events_topic.clone(),
            flush_interval: config.flush_interval,
            checkpoint_interval: config.checkpoint_interval,
        },
        tokio::runtime::Handle::current(),
    );
    let worker = spawn_loop(pipeline, consumer, &cancel, config.runtime.shutdown_timeout)?;
    let app = Arc::new(AdminApp {
        partitions,
        metrics,
    });
    tracing::info!(addr = %listener.local_addr()?, "processor admin listening");
    let surface = analytics_http::Surface::internal();
    analytics_http::serve(listener, app, surface, cancel.clone(), &config.runtime).await;
    let joined = tokio::task::spawn_blocking(move || worker.join()).await?;
    match joined {
        Ok(r) => r.context("processor loop failed")?,
        Err(_) => anyhow::bail!("processor loop panicked"),
    }
    tracing::info!("processor stopped");
    Ok(())
}

/// The event-time rules of the flags, checked.
fn event_rules(config: &Config) -> Result<state::Rules> {
    if config.dedup_window > config.window.max_event_age {
        anyhow::bail!(
            "--dedup-window ({:?}) may be at most --max-event-age ({:?})",
            config.dedup_window,
            config.window.max_event_age
        );
    }
    Ok(state::Rules::new(
        config.window.max_event_age_ms(),
        config.window.max_future_skew_ms(),
        config.dedup_window.as_millis() as i64,
    ))
}

/// Runs the pipeline on a thread of its own (its consumer's rebalance callback blocks),
/// cancelling `cancel` when it ends, whatever ended it.
fn spawn_loop(
    pipeline: pipeline::Pipeline,
    consumer: BaseConsumer<rebalance::ProcessorContext>,
    cancel: &CancellationToken,
    shutdown_timeout: Duration,
) -> Result<std::thread::JoinHandle<rdkafka::error::KafkaResult<()>>> {
    let cancel = cancel.clone();
    std::thread::Builder::new()
        .name("processor-loop".into())
        .spawn(move || {
            let r = pipeline.run(consumer, cancel.clone(), shutdown_timeout);
            cancel.cancel();
            r
        })
        .context("spawning the processor thread")
}
