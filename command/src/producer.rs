//! Produces accepted events to the events topic and reports success only once the broker
//! has acknowledged them (`acks=all`, idempotent producer).
//!
//! While the broker is unreachable, requests fail fast: the first failed delivery (or
//! librdkafka reporting every broker down) opens a breaker, new events are refused at once
//! with [`ProduceError::NotSent`], and a background probe closes the breaker when the
//! broker answers metadata requests again. The same probe replaces the producer first if a
//! delivery failed because its producer state is broken (see [`analytics_kafka::producer`]).

use analytics_kafka::args::KafkaArgs;
use analytics_kafka::producer::Recovering;
use analytics_model::event::Event;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::ClientConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Why an event was not acknowledged. The first two were never handed to the broker, so a
/// client may retry them without any risk of counting them twice.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("producer queue is full")]
    QueueFull,
    #[error("broker unavailable, event not sent: {0}")]
    NotSent(String),
    #[error("no acknowledgement, the event may or may not be stored: {0}")]
    Unacknowledged(String),
}

impl ProduceError {
    /// The `cause` label of `analytics_events_unavailable_total`.
    pub fn cause(&self) -> &'static str {
        match self {
            ProduceError::QueueFull => "queue_full",
            ProduceError::NotSent(_) => "broker",
            ProduceError::Unacknowledged(_) => "delivery",
        }
    }

    /// Every label [`ProduceError::cause`] can return.
    pub const CAUSES: &[&str] = &["queue_full", "broker", "delivery"];

    /// The body of the `503`: it says whether a retry can count the event twice (never,
    /// for an event with an id).
    pub fn client_message(&self, with_id: bool) -> &'static str {
        match (self, with_id) {
            (ProduceError::QueueFull, false) => {
                "too many events in flight; the event was not stored, retry later"
            }
            (ProduceError::QueueFull, true) => {
                "too many events in flight; the event was not stored, retry later (a retry with the same id is safe)"
            }
            (ProduceError::NotSent(_), false) => {
                "event store unavailable; the event was not stored, retry later"
            }
            (ProduceError::NotSent(_), true) => {
                "event store unavailable; the event was not stored, retry later (a retry with the same id is safe)"
            }
            (ProduceError::Unacknowledged(_), false) => {
                "event store did not acknowledge in time; the event may or may not be stored"
            }
            (ProduceError::Unacknowledged(_), true) => {
                "event store did not acknowledge in time; the event may or may not be stored: a retry with the same id is safe, it counts once"
            }
        }
    }
}

/// An event handed to the producer, awaiting the broker's acknowledgement.
pub struct Pending<'a> {
    delivery: analytics_kafka::producer::Sent<'a, HealthContext>,
    health: &'a BrokerHealth,
}

impl Pending<'_> {
    pub async fn acknowledged(self) -> Result<(), ProduceError> {
        match self.delivery.delivered().await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.health.mark_down(&e.to_string());
                Err(ProduceError::Unacknowledged(e.to_string()))
            }
        }
    }
}

/// Producer tuning, from the command's flags.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    pub linger: Duration,
    pub delivery_timeout: Duration,
    pub max_queued: u32,
}

/// Shared flag: is the broker believed to be down?
#[derive(Default)]
pub struct BrokerHealth {
    down: AtomicBool,
}

impl BrokerHealth {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
    fn mark_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                reason = why,
                "broker unavailable: refusing events until it answers"
            );
        }
    }
    fn mark_up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("broker reachable again: accepting events");
        }
    }
}

#[derive(Clone)]
pub struct HealthContext {
    health: Arc<BrokerHealth>,
}

impl ClientContext for HealthContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.mark_down(reason);
        } else {
            tracing::debug!(%error, reason, "librdkafka error");
        }
    }
}

pub struct EventProducer {
    producer: Recovering<HealthContext>,
    topic: String,
    pub health: Arc<BrokerHealth>,
}

impl EventProducer {
    pub fn new(
        kafka: &KafkaArgs,
        topic: &str,
        s: &ProducerSettings,
        replaced: prometheus::IntCounter,
    ) -> Result<Self, KafkaError> {
        let health = Arc::new(BrokerHealth::default());
        let timeout_ms = s.delivery_timeout.as_millis().max(1000);
        let mut cfg: ClientConfig =
            analytics_kafka::client::client_config(kafka, "analytics-command");
        cfg.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", s.linger.as_millis().to_string())
            .set("message.timeout.ms", timeout_ms.to_string())
            .set("request.timeout.ms", timeout_ms.min(30_000).to_string())
            .set("queue.buffering.max.messages", s.max_queued.to_string())
            // Same partitioner as the Java client: a user's events always land in one partition.
            .set("partitioner", "murmur2_random");
        let producer = Recovering::new(
            cfg,
            HealthContext {
                health: health.clone(),
            },
            replaced,
        )?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            health,
        })
    }

    /// Sends the event and waits for the broker's acknowledgement.
    pub async fn send(&self, event: &Event) -> Result<(), ProduceError> {
        self.enqueue(event)?.acknowledged().await
    }

    /// Hands the event to the producer without waiting: a batch enqueues every event first,
    /// then awaits the acknowledgements, which arrive together.
    pub fn enqueue(&self, event: &Event) -> Result<Pending<'_>, ProduceError> {
        if self.health.is_down() {
            return Err(ProduceError::NotSent("breaker open".into()));
        }
        let payload = event.encode();
        let record = FutureRecord::to(&self.topic)
            .key(event.user.as_bytes())
            .payload(&payload)
            .timestamp(event.received_at.0);
        match self.producer.send_result(record) {
            Ok(delivery) => Ok(Pending {
                delivery,
                health: &self.health,
            }),
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                Err(ProduceError::QueueFull)
            }
            Err((e, _)) => {
                // The probe replaces the producer if this error broke it.
                self.health.mark_down(&e.to_string());
                Err(ProduceError::NotSent(e.to_string()))
            }
        }
    }

    /// Messages waiting in the producer queue (not yet acknowledged).
    pub fn queue_depth(&self) -> i32 {
        self.producer.get().in_flight_count()
    }

    /// Asks the broker for the events topic's metadata (blocking; run off the runtime).
    /// Fails when the broker does not answer or the topic does not exist (yet).
    pub fn probe(&self, timeout: Duration) -> Result<(), String> {
        let md = self
            .producer
            .get()
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| format!("unreachable ({e})"))?;
        match md.topics().iter().find(|t| t.name() == self.topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            _ => Err(format!("topic {} does not exist yet", self.topic)),
        }
    }

    /// Waits up to `timeout` for queued messages to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.get().flush(timeout) {
            tracing::warn!(error = %e, "producer flush at shutdown did not complete");
        }
    }
}

/// Closes the breaker when the broker answers again; runs until `cancel`.
pub async fn run_probe(producer: Arc<EventProducer>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if !producer.health.is_down() {
            continue;
        }
        let p = producer.clone();
        let started = Instant::now();
        // A producer whose state the broker rejected (fenced, fatal) needs a new instance first.
        let ok = tokio::task::spawn_blocking(move || {
            p.producer.recover().map_err(|e| e.to_string())?;
            p.probe(Duration::from_secs(1))
        })
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
        if ok {
            producer.health.mark_up();
        } else {
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "broker probe failed"
            );
        }
    }
}
