//! The consume → aggregate → publish loop, run on a dedicated thread.
//!
//! Delivery guarantee: every flush publishes the absolute partials of the hours that changed,
//! waits for the broker's acknowledgement (and for dead-letter records), and only then
//! commits the next offset with the partition watermark as metadata. A crash replays from
//! the committed point (see [`crate::restore`]); because processing is deterministic, the
//! partials published again are identical, so the materializer's offset guard makes the
//! whole pipeline effectively exactly-once without Kafka transactions. A paused instance that
//! lost its partitions (a zombie) can only publish partials that are identical to the new
//! owner's, or older ones that the offset guard ignores.

use crate::metrics::{lateness_bucket, Metrics};
use crate::restore;
use crate::state::{user_hash, Applied, PartitionState, Rules};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use shared::event::{EventKind, Partial};
use shared::hour::{hour_start, HOUR_MS};
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

/// Consumer context: computes each newly assigned partition's start offset before assigning.
pub struct ProcessorContext {
    pub shared: Arc<Shared>,
    pub topic: String,
    pub rules: Rules,
    pub cancel: CancellationToken,
    pub metrics: Metrics,
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
                let mut states = self.shared.states.lock().expect("not poisoned");
                states.retain(|p, _| assigned.contains(p));
                let mut at = self.shared.assigned_at.lock().expect("not poisoned");
                for &p in &assigned {
                    let offset = match states.get(&p) {
                        Some(s) => s.next_offset,
                        None => {
                            let sp = self.start_point_retrying(base, p);
                            tracing::info!(
                                partition = p,
                                offset = sp.offset,
                                resume_from = sp.resume_from,
                                "restoring partition"
                            );
                            states.insert(p, PartitionState::new(p, sp));
                            at.insert(p, Instant::now());
                            sp.offset
                        }
                    };
                    tpl.set_partition_offset(&self.topic, p, Offset::Offset(offset))
                        .expect("partition is in the list");
                }
                *self.shared.owned.lock().expect("not poisoned") =
                    assigned.iter().copied().collect();
                drop(at);
                drop(states);
                if let Err(e) = base.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
                self.shared.assigned_once.store(true, Ordering::Relaxed);
                tracing::info!(partitions = ?assigned, "partitions assigned");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Keep the state: if the partitions come back, processing resumes from our own
                // position, which is exact whatever other owners did meanwhile.
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
    fn start_point_retrying(&self, base: &BaseConsumer<Self>, p: i32) -> crate::state::StartPoint {
        let mut delay = Duration::from_millis(200);
        loop {
            match restore::start_point(base, &self.topic, p, &self.rules, Duration::from_secs(5)) {
                Ok(sp) => return sp,
                Err(e) if self.cancel.is_cancelled() => {
                    tracing::warn!(partition = p, error = %e, "giving up restore: shutting down");
                    return crate::state::StartPoint::BEGINNING;
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot compute restore point yet; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
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

pub struct Pipeline {
    pub producer: FutureProducer,
    pub shared: Arc<Shared>,
    pub rules: Rules,
    pub metrics: Metrics,
    pub topic: String,
    pub hourly_topic: String,
    pub dead_letter_topic: String,
    pub flush_interval: Duration,
    /// Leave and rejoin the group after holding no partition for this long (zero: never).
    pub rejoin_when_unassigned: Duration,
    pub runtime: tokio::runtime::Handle,
    /// Dead-letter records (key, body) to publish with the next flush.
    pending_dead_letters: Vec<(Vec<u8>, String)>,
    committed: HashMap<i32, i64>,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        producer: FutureProducer,
        shared: Arc<Shared>,
        rules: Rules,
        metrics: Metrics,
        kafka: &shared::config::KafkaArgs,
        flush_interval: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            producer,
            shared,
            rules,
            metrics,
            topic: kafka.events_topic.clone(),
            hourly_topic: kafka.hourly_topic.clone(),
            dead_letter_topic: kafka.dead_letter_topic.clone(),
            flush_interval,
            rejoin_when_unassigned: Duration::ZERO,
            runtime,
            pending_dead_letters: Vec::new(),
            committed: HashMap::new(),
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
        let mut watchdog = shared::kafka::RejoinWatchdog::new(self.rejoin_when_unassigned);
        while !cancel.is_cancelled() {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(msg)) => self.process(&msg),
                Some(Err(e)) => tracing::warn!(error = %e, "consume error"),
                None => {}
            }
            if last_flush.elapsed() >= self.flush_interval {
                self.flush(&consumer, &cancel);
                last_flush = Instant::now();
                let unassigned = self.shared.owned.lock().expect("not poisoned").is_empty();
                if watchdog.should_rejoin(unassigned) {
                    consumer.unsubscribe();
                    consumer.subscribe(&[&self.topic])?;
                }
            }
        }
        let deadline = CancellationToken::new();
        let expire = deadline.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(shutdown_timeout).await;
            expire.cancel();
        });
        self.flush(&consumer, &deadline);
        consumer.unsubscribe();
        tracing::info!("processor loop stopped");
        Ok(())
    }

    fn process(&mut self, msg: &BorrowedMessage<'_>) {
        let p = msg.partition();
        let offset = msg.offset();
        let mut states = self.shared.states.lock().expect("not poisoned");
        let Some(state) = states.get_mut(&p) else {
            return;
        };
        if offset < state.next_offset {
            return; // already applied (re-fetch after a seek)
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

    /// Publishes changed partials, waits for acknowledgements, commits, evicts.
    fn flush(&mut self, consumer: &BaseConsumer<ProcessorContext>, cancel: &CancellationToken) {
        let started = Instant::now();
        let mut partials = Vec::new();
        let mut commits = Vec::new();
        {
            let owned = self.shared.owned.lock().expect("not poisoned").clone();
            let mut states = self.shared.states.lock().expect("not poisoned");
            for s in states.values_mut() {
                s.take_dirty(&mut partials);
                if owned.contains(&s.partition)
                    && s.restored()
                    && self.committed.get(&s.partition) != Some(&s.next_offset)
                {
                    commits.push((s.partition, s.next_offset, s.watermark));
                }
            }
        }
        if partials.is_empty() && commits.is_empty() && self.pending_dead_letters.is_empty() {
            self.after_flush();
            return;
        }
        let mut delay = Duration::from_millis(100);
        while !self.publish(&partials) {
            if cancel.is_cancelled() {
                // Not acknowledged: do not commit; the next owner replays these offsets.
                self.restore_dirty(&partials);
                return;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        self.metrics
            .partials_published
            .inc_by(partials.len() as u64);
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

    /// Sends the partials and pending dead letters; true when all were acknowledged (the
    /// dead letters are then forgotten; otherwise everything is sent again next time).
    fn publish(&mut self, partials: &[Partial]) -> bool {
        let mut records: Vec<(&str, Vec<u8>, Vec<u8>)> =
            Vec::with_capacity(partials.len() + self.pending_dead_letters.len());
        for partial in partials {
            let payload = serde_json::to_vec(partial).expect("partials serialize");
            records.push((&self.hourly_topic, partial.key().into_bytes(), payload));
        }
        for (key, body) in &self.pending_dead_letters {
            records.push((
                &self.dead_letter_topic,
                key.clone(),
                body.clone().into_bytes(),
            ));
        }
        let mut futures = Vec::with_capacity(records.len());
        for (topic, key, payload) in &records {
            loop {
                let record = FutureRecord::to(topic).key(key).payload(payload);
                match self.producer.send_result(record) {
                    Ok(f) => break futures.push(f),
                    Err((e, _)) => {
                        tracing::debug!(error = %e, "producer queue full; waiting");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
        let ok = self.runtime.block_on(async move {
            let mut ok = true;
            for f in futures {
                match f.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        tracing::warn!(error = %e, "publishing failed; retrying");
                        ok = false;
                    }
                    Err(_) => ok = false,
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
