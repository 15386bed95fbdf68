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

use crate::metrics::{lateness_bucket, DeadLetterReason, Metrics, CONSUMED_SAMPLE};
use crate::publish::Publish;
use crate::rebalance::{Partitions, ProcessorContext};
use crate::seen::pair_hash;
use crate::state::{user_hash, Applied, EventAt, Rules};
use analytics_kafka::gaps::{Admitted, GapGuard, Position};
use analytics_model::event::{EventRecord, RecordError, EVENT_FORMAT};
use analytics_model::hour::Millis;
use analytics_runtime::metrics::observe_since;
use analytics_runtime::metrics::LabelValue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most records processed between two looks at the clock and the cancellation: about a
/// millisecond of work with a backlog, one record when idle.
const BURST: usize = 1024;

/// Least time between two flushes when the consumer has caught up: a write is published as
/// soon as it is read, and a trickle of writes still makes at most 50 flushes a second.
const CAUGHT_UP_FLUSH: Duration = Duration::from_millis(20);

/// What one burst did.
struct Burst {
    /// Records read.
    read: usize,
    /// The consumer had nothing more: the processor has caught up.
    caught_up: bool,
}

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
    /// Live events counted so far, for the sampling of [`CONSUMED_SAMPLE`].
    counted: u64,
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
            counted: 0,
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
        let mut changed = false;
        while !cancel.is_cancelled() {
            let burst = self.burst(&consumer);
            changed |= burst.read > 0;
            let since = last_flush.elapsed();
            // Every flush interval while records keep coming; at once when the consumer has
            // caught up with a change in hand (but not more often than CAUGHT_UP_FLUSH), so
            // that a write is visible without waiting for the next interval.
            let caught_up = burst.caught_up && changed && since >= CAUGHT_UP_FLUSH;
            if since >= self.flush_interval || caught_up {
                self.flush(&cancel, false, |c| commit(&consumer, c));
                last_flush = Instant::now();
                changed = false;
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

    /// Processes the records the consumer holds, up to [`BURST`]: the first waited for up to
    /// 20 ms, the others taken only if already fetched, then all of them under one lock of
    /// the partitions' state. The clock (for the flush), the cancellation and the state's lock
    /// are taken once per burst rather than once per record: with a backlog they cost as much
    /// as the rest of a record's work (docs/benchmarks-notes.md). The lock is not held while
    /// polling: a rebalance runs inside `poll` and takes it.
    fn burst(&mut self, consumer: &BaseConsumer<ProcessorContext>) -> Burst {
        let mut msgs = Vec::new();
        let mut wait = Duration::from_millis(20);
        let mut caught_up = false;
        while msgs.len() < BURST {
            match consumer.poll(wait) {
                Some(Ok(msg)) => msgs.push(msg),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consume error");
                    break;
                }
                None => {
                    caught_up = true;
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        if !msgs.is_empty() {
            self.process(consumer, &msgs);
        }
        Burst {
            read: msgs.len(),
            caught_up,
        }
    }

    /// Applies consumed records to their partitions' state, in offset order with none
    /// stepped over ([`GapGuard::admit`]); then publishes the dead letters they made.
    fn process(&mut self, consumer: &BaseConsumer<ProcessorContext>, msgs: &[BorrowedMessage<'_>]) {
        let partitions = Arc::clone(&self.partitions);
        let mut states = partitions.states.lock().expect("not poisoned");
        let (mut consumed, mut dead) = (0, Vec::new());
        for (i, msg) in msgs.iter().enumerate() {
            let Some(state) = states.get_mut(&msg.partition()) else {
                continue;
            };
            if !self.in_sequence(consumer, state.next_offset, msg) {
                continue;
            }
            consumed += 1;
            let reason = match event_at(msg) {
                Ok(event) => {
                    let applied = state.apply(&self.rules, event);
                    self.applied(event, applied)
                }
                Err(e) => {
                    let live = state.skip(msg.offset());
                    if live {
                        let (partition, offset) = (msg.partition(), msg.offset());
                        tracing::warn!(partition, offset, error = %e, "not an event: dead-lettered");
                    }
                    live.then(|| DeadLetterReason::from(&e))
                }
            };
            dead.extend(reason.map(|r| (i, r)));
        }
        drop(states);
        self.metrics.consumed.inc_by(consumed);
        for (i, reason) in dead {
            self.dead_letter(&msgs[i], reason);
        }
    }

    /// True when `msg` is the record its partition expects next ([`GapGuard::admit`]: a
    /// record beyond it makes the consumer seek back, one before it was applied already).
    fn in_sequence(
        &mut self,
        consumer: &BaseConsumer<ProcessorContext>,
        expected: i64,
        msg: &BorrowedMessage<'_>,
    ) -> bool {
        let partition = msg.partition();
        let at = Position {
            partition,
            expected,
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis(),
        };
        let topic = &self.topic;
        let seek = |from| {
            let to = Offset::Offset(from);
            consumer.seek(topic, partition, to, Duration::from_secs(1))
        };
        self.gaps.admit(at, seek) == Admitted::Next
    }

    /// Counts what [`PartitionState::apply`](crate::state::PartitionState::apply) did with
    /// an event (a late one, a duplicate); the reason to dead-letter it, if it must be.
    fn applied(&mut self, event: EventAt, applied: Applied) -> Option<DeadLetterReason> {
        match applied {
            Applied::Counted { live } => {
                if live {
                    self.sample_consumed(event);
                }
                let late = event.received.hour().hours_since(event.time.hour());
                if live && late > 0 {
                    self.metrics
                        .late
                        .with_label_values(&[lateness_bucket(late)])
                        .inc();
                }
                None
            }
            Applied::DeadLetter { publish } => publish.then_some(DeadLetterReason::HourClosed),
            Applied::Duplicate { live } => {
                if live {
                    self.metrics.duplicates.inc();
                }
                None
            }
        }
    }

    /// Times one live event in [`CONSUMED_SAMPLE`] from its receipt to now
    /// ([`Hop::Consumed`](analytics_runtime::metrics::Hop::Consumed)).
    fn sample_consumed(&mut self, event: EventAt) {
        self.counted += 1;
        if self.counted % CONSUMED_SAMPLE == 0 {
            let now = analytics_model::clock::now_ms();
            observe_since(&self.metrics.hop_consumed, event.received.0, now);
        }
    }

    fn dead_letter(&mut self, msg: &BorrowedMessage<'_>, reason: DeadLetterReason) {
        let reason = reason.as_str();
        self.metrics
            .dead_lettered
            .with_label_values(&[reason])
            .inc();
        let mut body = serde_json::json!({
            "v": analytics_model::event::JSON_FORMAT,
            "reason": reason,
            "partition": msg.partition(),
            "offset": msg.offset(),
            "timestamp": msg.timestamp().to_millis(),
        });
        let (field, payload) = dead_payload(msg.payload().unwrap_or_default());
        body[field] = payload.into();
        let body = body.to_string();
        let key = msg.key().unwrap_or_default().to_vec();
        self.pending_dead_letters.push((key, body));
    }
}

/// The record whole, for its dead letter: `payload` as text when it is text (a JSON event),
/// `payload_hex` otherwise (a binary event, which a text form would mangle).
fn dead_payload(payload: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(payload) {
        Ok(text) if payload.first() != Some(&EVENT_FORMAT) => ("payload", text.to_owned()),
        _ => (
            "payload_hex",
            payload.iter().map(|b| format!("{b:02x}")).collect(),
        ),
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
