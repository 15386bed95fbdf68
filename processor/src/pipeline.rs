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

use crate::changelog::Record;
use crate::metrics::{lateness_bucket, Metrics};
use crate::restore;
use crate::state::{user_hash, Applied, PartitionState, Rules};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use shared::event::{EventKind, Partial};
use shared::gaps::{GapGuard, Verdict};
use shared::hour::{hour_start, HOUR_MS};
use shared::producer::Recovering;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// State visible to the rebalance callback, the loop and the admin endpoints.
pub struct Shared {
    pub states: Mutex<HashMap<i32, PartitionState>>,
    pub owned: Mutex<BTreeSet<i32>>,
    /// Set after the first assignment has been received.
    pub assigned_once: AtomicBool,
    assigned_at: Mutex<HashMap<i32, Instant>>,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            states: Mutex::new(HashMap::new()),
            owned: Mutex::new(BTreeSet::new()),
            assigned_once: AtomicBool::new(false),
            assigned_at: Mutex::new(HashMap::new()),
        }
    }

    /// Partitions still replaying their already-published offsets.
    pub fn restoring(&self) -> Vec<i32> {
        let owned = self.owned.lock().expect("not poisoned").clone();
        let states = self.states.lock().expect("not poisoned");
        owned
            .into_iter()
            .filter(|p| states.get(p).is_some_and(|s| !s.restored()))
            .collect()
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// Consumer context: on every assignment, fences the changelog partitions and restores
/// their state before the partitions are assigned, so that fetching starts at the restored
/// positions.
pub struct ProcessorContext {
    pub shared: Arc<Shared>,
    pub topic: String,
    pub rules: Rules,
    pub cancel: CancellationToken,
    pub metrics: Metrics,
    pub changelog: restore::ChangelogIo,
}

impl ClientContext for ProcessorContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        shared::kafka::record_lag(&statistics, &self.topic, &self.metrics.lag);
    }
}

impl ConsumerContext for ProcessorContext {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                let started = Instant::now();
                let previous =
                    std::mem::take(&mut *self.shared.states.lock().expect("not poisoned"));
                let restored = self.restore_retrying(base, &assigned, previous);
                let mut at = self.shared.assigned_at.lock().expect("not poisoned");
                for s in restored.values() {
                    tpl.set_partition_offset(
                        &self.topic,
                        s.partition,
                        Offset::Offset(s.next_offset),
                    )
                    .expect("partition is in the list");
                    at.insert(s.partition, started);
                }
                drop(at);
                *self.shared.states.lock().expect("not poisoned") = restored;
                *self.shared.owned.lock().expect("not poisoned") =
                    assigned.iter().copied().collect();
                if let Err(e) = base.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
                self.shared.assigned_once.store(true, Ordering::Relaxed);
                tracing::info!(partitions = ?assigned, ms = started.elapsed().as_millis() as u64, "partitions assigned and restored");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.shared.owned.lock().expect("not poisoned").clear();
                if let Err(e) = base.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
                tracing::info!("partitions revoked");
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = base.unassign();
                self.shared.owned.lock().expect("not poisoned").clear();
            }
        }
    }
}

impl ProcessorContext {
    fn restore_retrying(
        &self,
        base: &BaseConsumer<Self>,
        partitions: &[i32],
        mut previous: HashMap<i32, PartitionState>,
    ) -> HashMap<i32, PartitionState> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.restore(base, partitions, &mut previous) {
                Ok(states) => return states,
                Err(e) if self.cancel.is_cancelled() => {
                    tracing::warn!(error = %e, "giving up restore: shutting down");
                    return HashMap::new();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot restore yet; retrying");
                    if let Err(e) = self.changelog.producer.recover() {
                        tracing::warn!(error = %e, "cannot replace the producer yet");
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Fences the partitions, folds their changelogs, and falls back to an events replay
    /// ([`restore::start_point`]) where the changelog has no usable checkpoint. A partition
    /// this instance held until now keeps its in-memory state (which may be ahead of the last
    /// checkpoint) if no other owner fenced it in between.
    fn restore(
        &self,
        base: &BaseConsumer<Self>,
        partitions: &[i32],
        previous: &mut HashMap<i32, PartitionState>,
    ) -> Result<HashMap<i32, PartitionState>, restore::RestoreError> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        let epochs = self.changelog.fence(partitions)?;
        let folded = self.changelog.read(&epochs, &self.rules)?;
        let mut states = HashMap::new();
        for (p, f) in folded {
            let epoch = epochs[&p];
            let label = p.to_string();
            self.metrics
                .restore_records
                .with_label_values(&[&label])
                .set(f.fold.records as i64);
            self.metrics
                .restore_bytes
                .with_label_values(&[&label])
                .set(f.fold.bytes as i64);
            if let Some(mut own) = previous.remove(&p) {
                if own.epoch >= 0 && f.fold.previous_epoch == own.epoch {
                    tracing::debug!(
                        partition = p,
                        epoch,
                        "kept the in-memory state: no other owner in between"
                    );
                    own.epoch = epoch;
                    states.insert(p, own);
                    continue;
                }
            }
            let truncated = f.truncated(&self.rules);
            let (records, ignored) = (f.fold.records, f.fold.ignored);
            let state = match (truncated, PartitionState::from_fold(p, epoch, f.fold)) {
                (false, Some(s)) => {
                    tracing::info!(
                        partition = p,
                        epoch,
                        records,
                        ignored,
                        next_offset = s.next_offset,
                        "restored from the changelog"
                    );
                    s
                }
                _ => {
                    let sp = restore::start_point(
                        base,
                        &self.topic,
                        p,
                        &self.rules,
                        Duration::from_secs(5),
                    )?;
                    tracing::info!(
                        partition = p,
                        epoch,
                        truncated,
                        offset = sp.offset,
                        resume_from = sp.resume_from,
                        "no usable checkpoint: replaying events"
                    );
                    let mut s = PartitionState::new(p, sp);
                    s.epoch = epoch;
                    s
                }
            };
            states.insert(p, state);
        }
        Ok(states)
    }
}

/// A record to publish: a partial (hourly topic), a changelog record (to the changelog
/// partition of its source partition) or a dead letter.
#[derive(Clone)]
struct Out {
    changelog: Option<i32>,
    dead_letter: bool,
    key: Vec<u8>,
    payload: Vec<u8>,
}

impl Out {
    fn partial(p: &Partial) -> Self {
        Out {
            changelog: None,
            dead_letter: false,
            key: p.key().into_bytes(),
            payload: serde_json::to_vec(p).expect("partials serialize"),
        }
    }

    fn changelog(partition: i32, record: Record) -> Self {
        Out {
            changelog: Some(partition),
            dead_letter: false,
            key: partition.to_string().into_bytes(),
            payload: record.encode(),
        }
    }
}

#[derive(Deserialize)]
struct EventRef<'a> {
    timestamp: i64,
    #[serde(borrow)]
    user: Cow<'a, str>,
    kind: EventKind,
    #[serde(default)]
    received_at: i64,
}

/// What the pipeline takes from the processor's configuration.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub events_topic: String,
    pub hourly_topic: String,
    pub dead_letter_topic: String,
    pub changelog_topic: String,
    /// How often changed partials are published.
    pub flush_interval: Duration,
    /// How often changelog deltas and a checkpoint are written (partials go out every flush).
    pub checkpoint_interval: Duration,
}

pub struct Pipeline {
    pub producer: Arc<Recovering<DefaultClientContext>>,
    pub shared: Arc<Shared>,
    pub rules: Rules,
    pub metrics: Metrics,
    pub topic: String,
    pub hourly_topic: String,
    pub dead_letter_topic: String,
    pub changelog_topic: String,
    pub flush_interval: Duration,
    pub checkpoint_interval: Duration,
    last_checkpoint: Instant,
    pub runtime: tokio::runtime::Handle,
    /// Dead-letter records (key, body) to publish with the next flush.
    pending_dead_letters: Vec<(Vec<u8>, String)>,
    committed: HashMap<i32, i64>,
    committed_for: BTreeSet<i32>,
    gaps: GapGuard,
}

impl Pipeline {
    pub fn new(
        producer: Arc<Recovering<DefaultClientContext>>,
        shared: Arc<Shared>,
        rules: Rules,
        metrics: Metrics,
        settings: PipelineSettings,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            producer,
            shared,
            rules,
            metrics,
            topic: settings.events_topic,
            hourly_topic: settings.hourly_topic,
            dead_letter_topic: settings.dead_letter_topic,
            changelog_topic: settings.changelog_topic,
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
                self.flush(&consumer, &cancel, false);
                last_flush = Instant::now();
            }
        }
        let deadline = CancellationToken::new();
        let expire = deadline.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(shutdown_timeout).await;
            expire.cancel();
        });
        self.flush(&consumer, &deadline, true);
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
    /// A checkpoint therefore never names an offset whose partials are not durable.
    fn flush(
        &mut self,
        consumer: &BaseConsumer<ProcessorContext>,
        cancel: &CancellationToken,
        last: bool,
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
        if out.is_empty()
            && checkpoints.is_empty()
            && commits.is_empty()
            && self.pending_dead_letters.is_empty()
        {
            self.after_flush();
            return;
        }
        if !self.publish_retrying(&out, cancel) {
            // Not acknowledged: nothing is checkpointed or committed; the next owner replays.
            self.restore_dirty(&partials);
            return;
        }
        self.metrics
            .partials_published
            .inc_by(partials.len() as u64);
        let phase2: Vec<Out> = checkpoints.iter().map(|(_, _, o)| o.clone()).collect();
        if !phase2.is_empty() && !self.publish_retrying(&phase2, cancel) {
            return;
        }
        if checkpoint_due {
            self.last_checkpoint = Instant::now();
        }
        let written: u64 = out
            .iter()
            .chain(&phase2)
            .filter(|o| o.changelog.is_some())
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
        if !commits.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for &(p, next, w) in &commits {
                let mut e = tpl.add_partition(&self.topic, p);
                e.set_offset(Offset::Offset(next)).expect("valid offset");
                e.set_metadata(restore::encode_metadata(w));
            }
            match consumer.commit(&tpl, CommitMode::Async) {
                Ok(()) => {
                    for (p, next, _) in commits {
                        self.committed.insert(p, next);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "offset commit failed; will retry"),
            }
        }
        self.metrics
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        self.after_flush();
    }

    /// [`Self::publish`] until acknowledged; false if `cancel` fired first.
    fn publish_retrying(&mut self, records: &[Out], cancel: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(100);
        while !self.publish(records) {
            if cancel.is_cancelled() {
                return false;
            }
            // A fenced producer never recovers by itself (see shared::producer).
            if let Err(e) = self.producer.recover() {
                tracing::warn!(error = %e, "cannot replace the producer yet");
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        true
    }

    /// Sends the records and pending dead letters; true when all were acknowledged (the
    /// dead letters are then forgotten; otherwise everything is sent again next time).
    fn publish(&mut self, records: &[Out]) -> bool {
        let dead: Vec<Out> = self
            .pending_dead_letters
            .iter()
            .map(|(key, body)| Out {
                changelog: None,
                dead_letter: true,
                key: key.clone(),
                payload: body.clone().into_bytes(),
            })
            .collect();
        let mut futures = Vec::with_capacity(records.len() + dead.len());
        for o in records.iter().chain(&dead) {
            let topic = if o.changelog.is_some() {
                &self.changelog_topic
            } else if o.dead_letter {
                &self.dead_letter_topic
            } else {
                &self.hourly_topic
            };
            loop {
                let mut record = FutureRecord::to(topic).key(&o.key).payload(&o.payload);
                if let Some(p) = o.changelog {
                    record = record.partition(p);
                }
                match self.producer.send_result(record) {
                    Ok(f) => break futures.push(f),
                    Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                        tracing::debug!("producer queue full; waiting");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err((e, _)) => {
                        tracing::warn!(error = %e, "cannot publish; retrying");
                        return false;
                    }
                }
            }
        }
        let ok = self.runtime.block_on(async move {
            let mut ok = true;
            for f in futures {
                if let Err(e) = f.delivered().await {
                    tracing::warn!(error = %e, "publishing failed; retrying");
                    ok = false;
                }
            }
            ok
        });
        if ok {
            self.pending_dead_letters.clear();
        }
        ok
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
