//! The consume → aggregate → publish loop, run on a dedicated thread.
//!
//! Delivery guarantee: every flush publishes the absolute partials of the hours that changed
//! and waits for the broker's acknowledgement (and for dead-letter records); every
//! `--checkpoint-interval` the same flush first also appends the changelog deltas, and only
//! once all of that is acknowledged appends a checkpoint naming the next offset (see
//! [`crate::changelog`]). A crash or rebalance restores from the last checkpoint and replays
//! the events behind it; because processing is deterministic, the partials published again
//! are identical, so the materializer's offset guard makes the whole pipeline effectively
//! exactly-once without Kafka transactions. A paused instance that lost its partitions (a
//! zombie) can only publish partials identical to the new owner's or older ones, and its
//! changelog records carry a fenced-off epoch that restores ignore. Every event is applied
//! in offset order with none stepped over ([`analytics_kafka::gaps`]).

use crate::metrics::{lateness_bucket, DeadLetterReason, Metrics};
use crate::publish::Publish;
use crate::rebalance::{ProcessorContext, Shared};
use crate::seen::pair_hash;
use crate::state::{user_hash, Applied, Rules};
use analytics_kafka::{gaps::GapGuard, gaps::Verdict};
use analytics_model::{event::EventRecord, hour::hour_start, hour::HOUR_MS};
use analytics_runtime::metrics::LabelValue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// An offset to commit: (partition, next offset, partition watermark for the metadata).
pub type Commit = (i32, i64, i64);

/// What the pipeline takes from the processor's configuration.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub events_topic: String,
    /// How often changed partials are published.
    pub flush_interval: Duration,
    /// How often changelog deltas and a checkpoint are written (partials go out every flush).
    pub checkpoint_interval: Duration,
}

pub struct Pipeline {
    publisher: Box<dyn Publish>,
    shared: Arc<Shared>,
    rules: Rules,
    metrics: Metrics,
    topic: String,
    flush_interval: Duration,
    checkpoint_interval: Duration,
    last_checkpoint: Instant,
    runtime: tokio::runtime::Handle,
    /// Dead-letter records (key, body) to publish with the next flush.
    pending_dead_letters: Vec<(Vec<u8>, String)>,
    committed: HashMap<i32, i64>,
    committed_for: BTreeSet<i32>,
    gaps: GapGuard,
}

impl Pipeline {
    pub fn new(
        publisher: Box<dyn Publish>,
        shared: Arc<Shared>,
        rules: Rules,
        metrics: Metrics,
        settings: PipelineSettings,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            publisher,
            shared,
            rules,
            metrics,
            topic: settings.events_topic,
            checkpoint_interval: settings.checkpoint_interval,
            last_checkpoint: Instant::now(),
            flush_interval: settings.flush_interval,
            runtime,
            pending_dead_letters: Vec::new(),
            committed: HashMap::new(),
            committed_for: BTreeSet::new(),
            gaps: GapGuard::default(),
        }
    }

    /// Runs until `cancel`, then flushes and commits what is durable.
    /// The final flush gets up to `shutdown_timeout`; what it cannot publish stays uncommitted
    /// and is replayed by the next owner.
    pub fn run(
        mut self,
        consumer: BaseConsumer<ProcessorContext>,
        cancel: CancellationToken,
        shutdown_timeout: Duration,
    ) -> KafkaResult<()> {
        consumer.subscribe(&[&self.topic])?;
        let mut last_flush = Instant::now();
        while !cancel.is_cancelled() {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(msg)) => self.process(&consumer, &msg),
                Some(Err(e)) => tracing::warn!(error = %e, "consume error"),
                None => {}
            }
            if last_flush.elapsed() >= self.flush_interval {
                self.flush(&cancel, false, |c| commit(&consumer, c));
                last_flush = Instant::now();
            }
        }
        let deadline = CancellationToken::new();
        let expire = deadline.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(shutdown_timeout).await;
            expire.cancel();
        });
        self.flush(&deadline, true, |c| commit(&consumer, c));
        consumer.unsubscribe();
        tracing::info!("processor loop stopped");
        Ok(())
    }

    /// Acts on the [`GapGuard`]'s verdict: false when the record must be dropped, because it
    /// was already applied or because it lies beyond an offset the broker has not made
    /// readable yet (the consumer then seeks back).
    fn in_sequence(
        &self,
        consumer: &BaseConsumer<ProcessorContext>,
        msg: &BorrowedMessage<'_>,
        expected: i64,
        verdict: Verdict,
    ) -> bool {
        let p = msg.partition();
        match verdict {
            Verdict::InOrder => true,
            Verdict::Behind => false,
            Verdict::Skip { missing } => {
                self.metrics
                    .offset_gaps
                    .with_label_values(&["skipped"])
                    .inc();
                tracing::warn!(
                    partition = p,
                    expected,
                    offset = msg.offset(),
                    missing,
                    "offsets missing from the events topic: skipping them"
                );
                true
            }
            Verdict::Refetch { from } => {
                self.metrics
                    .offset_gaps
                    .with_label_values(&["refetched"])
                    .inc();
                if from == expected {
                    tracing::info!(
                        partition = p,
                        expected,
                        offset = msg.offset(),
                        "record beyond the expected offset: fetching again"
                    );
                }
                if let Err(e) =
                    consumer.seek(&self.topic, p, Offset::Offset(from), Duration::from_secs(1))
                {
                    tracing::warn!(partition = p, error = %e, "seek failed");
                }
                false
            }
        }
    }

    fn process(&mut self, consumer: &BaseConsumer<ProcessorContext>, msg: &BorrowedMessage<'_>) {
        let p = msg.partition();
        let offset = msg.offset();
        let mut states = self.shared.states.lock().expect("not poisoned");
        let Some(state) = states.get_mut(&p) else {
            return;
        };
        let verdict = self
            .gaps
            .check(p, state.next_offset, offset, msg.timestamp().to_millis());
        if !self.in_sequence(consumer, msg, state.next_offset, verdict) {
            return;
        }
        self.metrics.consumed.inc();
        let ev = match EventRecord::decode(msg.payload().unwrap_or_default()) {
            Ok(ev) => ev,
            Err(e) => {
                if state.skip(offset) {
                    drop(states);
                    tracing::warn!(partition = p, offset, error = %e, "not an event: dead-lettered");
                    self.dead_letter(msg, DeadLetterReason::from(&e));
                }
                return;
            }
        };
        let record_ts = msg.timestamp().to_millis().unwrap_or(ev.received_at);
        match state.apply(
            &self.rules,
            offset,
            record_ts,
            ev.timestamp,
            user_hash(&ev.user),
            ev.kind,
            ev.id.as_deref().map(|id| pair_hash(&ev.user, id)),
        ) {
            Applied::Counted { live } => {
                let late = (hour_start(record_ts) - hour_start(ev.timestamp)) / HOUR_MS;
                if live && late > 0 {
                    self.metrics
                        .late
                        .with_label_values(&[lateness_bucket(late)])
                        .inc();
                }
            }
            Applied::DeadLetter { publish } => {
                drop(states);
                if publish {
                    self.dead_letter(msg, DeadLetterReason::HourClosed);
                }
            }
            Applied::Duplicate { live } => {
                if live {
                    self.metrics.duplicates.inc();
                }
            }
        }
    }

    fn dead_letter(&mut self, msg: &BorrowedMessage<'_>, reason: DeadLetterReason) {
        let reason = reason.as_str();
        self.metrics
            .dead_lettered
            .with_label_values(&[reason])
            .inc();
        let body = serde_json::json!({
            "v": analytics_model::event::JSON_FORMAT,
            "reason": reason,
            "partition": msg.partition(),
            "offset": msg.offset(),
            "timestamp": msg.timestamp().to_millis(),
            "payload": msg.payload().map(String::from_utf8_lossy),
        })
        .to_string();
        let key = msg.key().unwrap_or_default().to_vec();
        self.pending_dead_letters.push((key, body));
    }
}

mod flush;
use flush::commit;
