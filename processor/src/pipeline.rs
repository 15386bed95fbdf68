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
//! in offset order with none stepped over ([`shared::gaps`]).

use crate::changelog::{Record, MAX_USERS_PER_DELTA};
use crate::metrics::{lateness_bucket, Metrics};
use crate::publish::{publish_retrying, Destination, Out, Publish};
use crate::rebalance::{ProcessorContext, Shared};
use crate::restore;
use crate::seen::pair_hash;
use crate::state::{user_hash, Applied, Rules};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use shared::event::{EventKind, Partial};
use shared::gaps::{GapGuard, Verdict};
use shared::hour::{hour_start, HOUR_MS};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// An offset to commit: (partition, next offset, partition watermark for the metadata).
pub type Commit = (i32, i64, i64);

#[derive(Deserialize)]
struct EventRef<'a> {
    timestamp: i64,
    #[serde(borrow)]
    user: Cow<'a, str>,
    kind: EventKind,
    #[serde(default)]
    received_at: i64,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
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
        let decoded = msg
            .payload()
            .and_then(|b| serde_json::from_slice::<EventRef<'_>>(b).ok());
        let Some(ev) = decoded else {
            if state.skip(offset) {
                drop(states);
                self.dead_letter(msg, "undecodable");
            }
            return;
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
                    self.dead_letter(msg, "hour_closed");
                }
            }
            Applied::Duplicate { live } => {
                if live {
                    self.metrics.duplicates.inc();
                }
            }
        }
    }

    fn dead_letter(&mut self, msg: &BorrowedMessage<'_>, reason: &'static str) {
        self.metrics
            .dead_lettered
            .with_label_values(&[reason])
            .inc();
        let body = serde_json::json!({
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

    /// Publishes what changed in two phases, then commits and evicts:
    /// 1. partials (hourly topic), changelog deltas and dead letters, all acknowledged;
    /// 2. a changelog checkpoint per partition that moved on, acknowledged.
    ///
    /// A checkpoint therefore never names an offset whose partials are not durable, and an
    /// offset is committed (by `commit`, which says whether it succeeded) only once both
    /// phases are acknowledged.
    fn flush(
        &mut self,
        cancel: &CancellationToken,
        last: bool,
        commit: impl FnOnce(&[Commit]) -> bool,
    ) {
        let started = Instant::now();
        let checkpoint_due = last || self.last_checkpoint.elapsed() >= self.checkpoint_interval;
        let mut partials = Vec::new();
        let mut deltas = Vec::new();
        let mut out: Vec<Out> = Vec::new();
        let mut checkpoints: Vec<(i32, i64, Out)> = Vec::new();
        let mut commits = Vec::new();
        {
            let owned = self.shared.owned.lock().expect("not poisoned").clone();
            if owned != self.committed_for {
                // Commits are asynchronous and may have failed around a rebalance: after any
                // change of assignment, commit every owned partition again.
                self.committed.clear();
                self.committed_for = owned.clone();
            }
            let mut states = self.shared.states.lock().expect("not poisoned");
            for s in states.values_mut() {
                s.take_dirty(&mut partials);
                // Only an owner writes to a partition's changelog: a revoked partition keeps
                // its unlogged changes, in case it comes back unfenced.
                if !owned.contains(&s.partition) {
                    continue;
                }
                if checkpoint_due {
                    s.take_deltas(&mut deltas);
                    for delta in deltas.drain(..) {
                        let record = Record::Delta {
                            epoch: s.epoch,
                            delta,
                        };
                        out.push(Out::changelog(s.partition, record));
                    }
                    for (bucket, pairs) in s.take_pairs() {
                        for chunk in pairs.chunks(MAX_USERS_PER_DELTA) {
                            let record = Record::Ids {
                                epoch: s.epoch,
                                bucket,
                                pairs: chunk.to_vec(),
                            };
                            out.push(Out::changelog(s.partition, record));
                        }
                    }
                }
                if checkpoint_due && s.epoch >= 0 && s.checkpointed != s.next_offset {
                    let record = Record::Checkpoint {
                        epoch: s.epoch,
                        next_offset: s.next_offset,
                        watermark: s.watermark,
                        complete_from_hour: s.complete_from_hour(),
                    };
                    checkpoints.push((
                        s.partition,
                        s.next_offset,
                        Out::changelog(s.partition, record),
                    ));
                }
                if s.restored() && self.committed.get(&s.partition) != Some(&s.next_offset) {
                    commits.push((s.partition, s.next_offset, s.watermark));
                }
            }
        }
        out.extend(partials.iter().map(Out::partial));
        out.extend(
            self.pending_dead_letters
                .iter()
                .map(|(key, body)| Out::dead_letter(key.clone(), body.clone())),
        );
        if out.is_empty() && checkpoints.is_empty() && commits.is_empty() {
            self.after_flush();
            return;
        }
        if !publish_retrying(self.publisher.as_mut(), &out, cancel) {
            // Not acknowledged: nothing is checkpointed or committed; the next owner replays.
            self.restore_dirty(&partials);
            return;
        }
        self.pending_dead_letters.clear();
        self.metrics
            .partials_published
            .inc_by(partials.len() as u64);
        let phase2: Vec<Out> = checkpoints.iter().map(|(_, _, o)| o.clone()).collect();
        if !phase2.is_empty() && !publish_retrying(self.publisher.as_mut(), &phase2, cancel) {
            return;
        }
        if checkpoint_due {
            self.last_checkpoint = Instant::now();
        }
        let written: u64 = out
            .iter()
            .chain(&phase2)
            .filter(|o| matches!(o.destination, Destination::Changelog(_)))
            .map(|o| o.payload.len() as u64)
            .sum();
        self.metrics.changelog_written_bytes.inc_by(written);
        {
            let mut states = self.shared.states.lock().expect("not poisoned");
            for (p, next, _) in &checkpoints {
                if let Some(s) = states.get_mut(p) {
                    s.checkpointed = *next;
                }
            }
        }
        if !commits.is_empty() && commit(&commits) {
            for (p, next, _) in commits {
                self.committed.insert(p, next);
            }
        }
        self.metrics
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        self.after_flush();
    }

    fn restore_dirty(&self, partials: &[Partial]) {
        let mut states = self.shared.states.lock().expect("not poisoned");
        for p in partials {
            if let Some(s) = states.get_mut(&p.partition) {
                s.mark_dirty([p.hour]);
            }
        }
    }

    fn after_flush(&mut self) {
        let mut states = self.shared.states.lock().expect("not poisoned");
        let mut assigned_at = self.shared.assigned_at.lock().expect("not poisoned");
        for s in states.values_mut() {
            s.evict(&self.rules);
            let label = s.partition.to_string();
            self.metrics
                .open_hours
                .with_label_values(&[&label])
                .set(s.open_hours() as i64);
            self.metrics
                .tracked_users
                .with_label_values(&[&label])
                .set(s.tracked_users() as i64);
            self.metrics
                .remembered_ids
                .with_label_values(&[&label])
                .set(s.remembered_pairs() as i64);
            if s.restored() {
                if let Some(t) = assigned_at.remove(&s.partition) {
                    let secs = t.elapsed().as_secs_f64();
                    self.metrics.restore_duration.observe(secs);
                    tracing::info!(
                        partition = s.partition,
                        seconds = secs,
                        "partition restored"
                    );
                }
            }
        }
    }
}

/// Commits the offsets of the events topic (asynchronously) with the partition watermark as
/// metadata; true if the commit was handed to the client.
fn commit(consumer: &BaseConsumer<ProcessorContext>, commits: &[Commit]) -> bool {
    let topic = &consumer.context().topic;
    let mut tpl = TopicPartitionList::new();
    for &(p, next, w) in commits {
        let mut e = tpl.add_partition(topic, p);
        e.set_offset(Offset::Offset(next)).expect("valid offset");
        e.set_metadata(restore::encode_metadata(w));
    }
    match consumer.commit(&tpl, CommitMode::Async) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "offset commit failed; will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PartitionState, StartPoint};
    use std::sync::Mutex;

    const HOUR: i64 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;

    /// One entry per call: what was published (by kind) or committed.
    type Log = Arc<Mutex<Vec<String>>>;

    /// Records every publish call; fails every call while `fail` is set.
    struct FakePublisher {
        log: Log,
        fail: bool,
    }

    impl Publish for FakePublisher {
        fn publish(&mut self, records: &[Out]) -> bool {
            let kinds: Vec<&str> = records
                .iter()
                .map(|o| match o.destination {
                    Destination::Hourly => "partial",
                    Destination::DeadLetter => "dead_letter",
                    Destination::Changelog(_) => match Record::decode(&o.payload) {
                        Some(Record::Checkpoint { .. }) => "checkpoint",
                        Some(Record::Delta { .. }) => "delta",
                        Some(Record::Ids { .. }) => "ids",
                        _ => "other",
                    },
                })
                .collect();
            self.log
                .lock()
                .unwrap()
                .push(format!("publish {}", kinds.join(",")));
            !self.fail
        }
    }

    fn rules() -> Rules {
        Rules::new(24 * HOUR_MS, 300_000, 24 * HOUR_MS)
    }

    /// A pipeline owning partition 0 (epoch 5) that has applied two events.
    fn pipeline(fail: bool, runtime: &tokio::runtime::Runtime) -> (Pipeline, Log) {
        let log = Log::default();
        let shared = Arc::new(Shared::new());
        let mut s = PartitionState::new(0, StartPoint::BEGINNING);
        s.epoch = 5;
        let t = HOUR + 1_000;
        s.apply(&rules(), 0, t, t, 1, EventKind::Click, None);
        s.apply(&rules(), 1, t, t, 2, EventKind::Impression, None);
        shared.states.lock().unwrap().insert(0, s);
        shared.owned.lock().unwrap().insert(0);
        let publisher = FakePublisher {
            log: log.clone(),
            fail,
        };
        let p = Pipeline::new(
            Box::new(publisher),
            shared,
            rules(),
            Metrics::new(),
            PipelineSettings {
                events_topic: "events".into(),
                flush_interval: Duration::from_millis(100),
                checkpoint_interval: Duration::from_secs(5),
            },
            runtime.handle().clone(),
        );
        (p, log)
    }

    fn committing(log: &Log) -> impl FnOnce(&[Commit]) -> bool + '_ {
        move |c: &[Commit]| {
            log.lock().unwrap().push(format!("commit {c:?}"));
            true
        }
    }

    #[test]
    fn flush_publishes_then_checkpoints_then_commits() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut p, log) = pipeline(false, &rt);
        p.flush(&CancellationToken::new(), true, committing(&log));
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                "publish delta,partial".to_owned(),
                "publish checkpoint".to_owned(),
                format!("commit [(0, 2, {})]", HOUR + 1_000),
            ]
        );
        let states = p.shared.states.lock().unwrap();
        assert_eq!(states[&0].checkpointed, 2, "the checkpoint is remembered");
    }

    #[test]
    fn partials_go_out_every_flush_and_the_changelog_only_when_a_checkpoint_is_due() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut p, log) = pipeline(false, &rt);
        // Not the last flush and the checkpoint interval has not passed.
        p.flush(&CancellationToken::new(), false, committing(&log));
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                "publish partial".to_owned(),
                format!("commit [(0, 2, {})]", HOUR + 1_000),
            ]
        );
    }

    #[test]
    fn nothing_is_checkpointed_or_committed_when_publishing_fails() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut p, log) = pipeline(true, &rt);
        let cancel = CancellationToken::new();
        cancel.cancel();
        p.flush(&cancel, true, committing(&log));
        assert_eq!(
            log.lock().unwrap().clone(),
            vec!["publish delta,partial".to_owned()],
            "one failed attempt, then given up: no checkpoint, no commit"
        );
        // The hour is dirty again: the next flush publishes it.
        let mut again = Vec::new();
        p.shared
            .states
            .lock()
            .unwrap()
            .get_mut(&0)
            .unwrap()
            .take_dirty(&mut again);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].clicks, again[0].impressions), (1, 1));
    }

    #[test]
    fn dead_letters_go_with_the_first_phase_and_are_sent_once() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut p, log) = pipeline(false, &rt);
        p.pending_dead_letters.push((b"k".to_vec(), "{}".into()));
        p.flush(&CancellationToken::new(), false, committing(&log));
        p.flush(&CancellationToken::new(), false, committing(&log));
        let log = log.lock().unwrap().clone();
        assert_eq!(log[0], "publish partial,dead_letter");
        assert!(
            log[1..].iter().all(|l| !l.contains("dead_letter")),
            "{log:?}"
        );
    }
}
