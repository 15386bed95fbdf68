//! The command service: validates `POST /analytics?timestamp={ms}&user={id}&click|impression`
//! and produces each event to Kafka, answering 204 only once the broker acknowledged it.
//!
//! | module | job |
//! | --- | --- |
//! | [`validate`] | every accepted and rejected request form |
//! | [`producer`] | the idempotent `acks=all` producer and its broker-down breaker |
//! | [`batch`] | the NDJSON batch: incremental, all-or-nothing parsing |
//! | [`encoding`] | a batch's `Content-Encoding` (gzip, deflate), bounded as sent and as decoded |
//! | [`app`] | the HTTP handlers: single event, batch, tracker |
//! | [`tracker`] | `GET /t.js`, the script web pages include (ETag, `304`) |
//! | [`metrics`] | the service's metric families |
//!
//! Delivery guarantee: an event answered 204 has been acknowledged by all in-sync replicas.
//! A request answered 503, or not answered at all, may or may not have been stored.

pub mod app;
pub mod batch;
pub mod encoding;
pub mod metrics;
pub mod producer;
pub mod tracker;
pub mod validate;

use analytics_edge::EdgeArgs;
use analytics_kafka::args::{EventsTopicArg, KafkaArgs};
use analytics_model::duration::parse_duration;
use analytics_model::window::WindowArgs;
use analytics_runtime::config::RuntimeArgs;
use anyhow::{Context, Result};
use clap::Parser;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Accepts analytics events over HTTP and produces them to Kafka.
#[derive(Debug, Clone, Parser)]
#[command(name = "command", version, args_conflicts_with_subcommands = true)]
pub struct Config {
    /// Run a tool instead of the service (`keys new`).
    #[command(subcommand)]
    pub tool: Option<analytics_edge::keytool::Tool>,
    /// Address to listen on for HTTP.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// How long the producer waits to batch events before sending (lower = lower latency).
    #[arg(long, env = "PRODUCER_LINGER", default_value = "2ms", value_parser = parse_duration)]
    pub producer_linger: Duration,
    /// Longest wait for the broker's acknowledgement before answering 503.
    #[arg(long, env = "DELIVERY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,
    /// Most events waiting for acknowledgement; beyond it requests get 503 at once.
    #[arg(long, env = "PRODUCER_MAX_QUEUED", default_value_t = 100_000)]
    pub producer_max_queued: u32,
    /// Most events in one `POST /analytics/batch`; more is refused with 413.
    #[arg(long, env = "MAX_BATCH_EVENTS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch_events: u32,
    /// Largest body of one `POST /analytics/batch`, in bytes; larger is refused with 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_body_bytes: u32,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub events: EventsTopicArg,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Serves the write API on `listener` until `cancel` fires, then drains in-flight requests
/// and flushes the producer, so that every event answered `204` is on the broker.
pub async fn run(config: Config, listener: TcpListener, cancel: CancellationToken) -> Result<()> {
    let settings = producer::ProducerSettings {
        linger: config.producer_linger,
        delivery_timeout: config.delivery_timeout,
        max_queued: config.producer_max_queued,
    };
    let metrics = metrics::Metrics::default();
    let edge = analytics_edge::prepare(&config.edge, metrics.http.registry(), &listener).await?;
    let producer = Arc::new(
        producer::EventProducer::new(
            &config.kafka,
            &config.events.events_topic,
            &settings,
            metrics.producer_replacements.clone(),
        )
        .context("creating the Kafka producer")?,
    );
    {
        let kafka = config.kafka.clone();
        let events = analytics_kafka::topics::Topic::Events {
            name: config.events.events_topic.clone(),
            retention: analytics_kafka::topics::events_retention(&config.window),
        };
        let cancel = cancel.clone();
        tokio::spawn(async move {
            analytics_kafka::topics::ensure_topics_retrying(&kafka, &[events], &cancel).await
        });
    }
    tokio::spawn(producer::run_probe(producer.clone(), cancel.clone()));
    let app = Arc::new(app::CommandApp {
        producer: producer.clone(),
        window: config.window.clone(),
        batch_limits: batch::Limits {
            max_events: config.max_batch_events as usize,
            max_body_bytes: config.max_body_bytes as usize,
        },
        metrics,
    });
    tracing::info!(addr = %listener.local_addr()?, "command listening");
    edge.serve(listener, app, cancel, &config.runtime).await;
    let p = producer.clone();
    let grace = config.runtime.shutdown_timeout;
    tokio::task::spawn_blocking(move || p.flush(grace)).await?;
    tracing::info!("command stopped");
    Ok(())
}
