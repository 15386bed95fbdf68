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
use crate::rebalance::{Partitions, ProcessorContext};
use crate::seen::pair_hash;
use crate::state::{user_hash, Applied, EventAt, Rules};
use analytics_kafka::gaps::{Admitted, GapGuard, Position};
use analytics_model::event::{EventRecord, RecordError};
use analytics_model::hour::Millis;
use analytics_runtime::metrics::LabelValue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// An offset to commit, with the partition's watermark for the commit's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub partition: i32,
    /// The next offset to read.
    pub next_offset: i64,
    pub watermark: Millis,
}

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
    partitions: Arc<Partitions>,
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
        partitions: Arc<Partitions>,
        rules: Rules,
        metrics: Metrics,
        settings: PipelineSettings,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let gaps = GapGuard::reading("the events topic", Some(metrics.offset_gaps.clone()));
        Self {
            publisher,
            partitions,
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
            gaps,
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

    /// Applies one consumed record to its partition's state, in offset order with none
    /// stepped over ([`GapGuard::admit`]).
    fn process(&mut self, consumer: &BaseConsumer<ProcessorContext>, msg: &BorrowedMessage<'_>) {
        let (partition, offset) = (msg.partition(), msg.offset());
        let mut states = self.partitions.states.lock().expect("not poisoned");
        let Some(state) = states.get_mut(&partition) else {
            return;
        };
        let at = Position {
            partition,
            expected: state.next_offset,
            offset,
            timestamp_ms: msg.timestamp().to_millis(),
        };
        let topic = &self.topic;
        let seek = |from| {
            consumer.seek(
                topic,
                partition,
                Offset::Offset(from),
                Duration::from_secs(1),
            )
        };
        if self.gaps.admit(at, seek) != Admitted::Next {
            return;
        }
        self.metrics.consumed.inc();
        let outcome = match event_at(msg) {
            Ok(event) => Ok((event, state.apply(&self.rules, event))),
            Err(e) => Err((e, state.skip(offset))),
        };
        drop(states);
        match outcome {
            Ok((event, applied)) => self.applied(msg, event, applied),
            Err((e, live)) => {
                if live {
                    tracing::warn!(partition, offset, error = %e, "not an event: dead-lettered");
                    self.dead_letter(msg, DeadLetterReason::from(&e));
                }
            }
        }
    }

    /// Counts what [`PartitionState::apply`](crate::state::PartitionState::apply) did with
    /// an event: a late one, a duplicate, or a dead letter to publish.
    fn applied(&mut self, msg: &BorrowedMessage<'_>, event: EventAt, applied: Applied) {
        match applied {
            Applied::Counted { live } => {
                let late = event.received.hour().hours_since(event.time.hour());
                if live && late > 0 {
                    self.metrics
                        .late
                        .with_label_values(&[lateness_bucket(late)])
                        .inc();
                }
            }
            Applied::DeadLetter { publish } => {
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

/// The event a record holds, as the state applies it: the receipt time from the record's
/// timestamp (the payload's copy when the record has none), the hashes of its user and of its
/// (user, id).
fn event_at(msg: &BorrowedMessage<'_>) -> Result<EventAt, RecordError> {
    let ev = EventRecord::decode(msg.payload().unwrap_or_default())?;
    Ok(EventAt {
        offset: msg.offset(),
        received: msg.timestamp().to_millis().map_or(ev.received_at, Millis),
        time: ev.timestamp,
        user: user_hash(&ev.user),
        kind: ev.kind,
        pair: ev.id.as_deref().map(|id| pair_hash(&ev.user, id)),
    })
}

mod flush;
use flush::commit;
