//! The processor's side of a consumer-group rebalance: on every assignment the changelog
//! partitions are fenced and the state restored (from the changelog, or by an events replay
//! where it has no usable checkpoint) *before* the partitions are assigned, so that fetching
//! starts at the restored positions; on a revocation the partitions stop being owned.
//!
//! The callback runs on the consumer's thread inside `poll`, so the restore blocks it; it is
//! retried with backoff until it succeeds or the process stops.
//!
//! Blocking is deliberate here, and safe: that thread is the pipeline's own OS thread, never a
//! tokio worker, and librdkafka's rebalance callback is synchronous: returning from it before
//! the restore is done would assign the partitions and start fetching from the wrong offsets.
//! So the backoff sleeps on that thread, and the fence's delivery futures are awaited with
//! `block_on` on the runtime's handle (which drives them on its workers); nothing else waits
//! on this consumer meanwhile.

use crate::metrics::Metrics;
use crate::restore;
use crate::state::{PartitionState, Rules};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The partitions this instance holds: their states, which it owns, and when each was
/// assigned; shared by the rebalance callback, the loop and the admin endpoints.
pub struct Partitions {
    pub states: Mutex<HashMap<i32, PartitionState>>,
    pub owned: Mutex<BTreeSet<i32>>,
    /// Set after the first assignment has been received.
    pub assigned_once: AtomicBool,
    pub(crate) assigned_at: Mutex<HashMap<i32, Instant>>,
}

impl Partitions {
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

impl Default for Partitions {
    fn default() -> Self {
        Self::new()
    }
}

/// Consumer context: on every assignment, fences the changelog partitions and restores
/// their state before the partitions are assigned, so that fetching starts at the restored
/// positions.
pub struct ProcessorContext {
    pub partitions: Arc<Partitions>,
    pub topic: String,
    pub rules: Rules,
    pub cancel: CancellationToken,
    pub metrics: Metrics,
    pub changelog: restore::ChangelogIo,
}

impl ClientContext for ProcessorContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        analytics_kafka::client::record_lag(&statistics, &self.topic, &self.metrics.lag);
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
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(base, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.partitions.owned.lock().expect("not poisoned").clear();
                if let Err(e) = base.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
                tracing::info!("partitions revoked");
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = base.unassign();
                self.partitions.owned.lock().expect("not poisoned").clear();
            }
        }
    }
}

impl ProcessorContext {
    /// Restores the assigned partitions, then assigns them at the restored positions.
    fn assign(&self, base: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let assigned: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let started = Instant::now();
        let previous = std::mem::take(&mut *self.partitions.states.lock().expect("not poisoned"));
        let restored = self.restore_retrying(base, &assigned, previous);
        let mut at = self.partitions.assigned_at.lock().expect("not poisoned");
        for s in restored.values() {
            tpl.set_partition_offset(&self.topic, s.partition, Offset::Offset(s.next_offset))
                .expect("partition is in the list");
            at.insert(s.partition, started);
        }
        drop(at);
        *self.partitions.states.lock().expect("not poisoned") = restored;
        *self.partitions.owned.lock().expect("not poisoned") = assigned.iter().copied().collect();
        if let Err(e) = base.assign(tpl) {
            tracing::error!(error = %e, "assign failed");
        }
        self.partitions.assigned_once.store(true, Ordering::Relaxed);
        tracing::info!(partitions = ?assigned, ms = started.elapsed().as_millis() as u64, "partitions assigned and restored");
    }

    fn restore_retrying(
        &self,
        base: &BaseConsumer<Self>,
        partitions: &[i32],
        mut previous: HashMap<i32, PartitionState>,
    ) -> HashMap<i32, PartitionState> {
        let mut backoff = analytics_runtime::backoff::Backoff::new(Duration::from_millis(200));
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
                    std::thread::sleep(backoff.next_delay());
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
            let m = &self.metrics;
            m.restore_records
                .with_label_values(&[&label])
                .set(f.fold.records as i64);
            m.restore_bytes
                .with_label_values(&[&label])
                .set(f.fold.bytes as i64);
            let state = match previous.remove(&p) {
                Some(mut own) if own.epoch >= 0 && f.fold.previous_epoch == own.epoch => {
                    tracing::debug!(
                        partition = p,
                        epoch,
                        "kept the in-memory state: no other owner in between"
                    );
                    own.epoch = epoch;
                    own
                }
                _ => self.rebuild(base, p, epoch, f)?,
            };
            states.insert(p, state);
        }
        Ok(states)
    }

    /// A partition's state from its folded changelog, or, where that cannot restore it,
    /// from a replay of its events.
    fn rebuild(
        &self,
        base: &BaseConsumer<Self>,
        p: i32,
        epoch: i64,
        f: restore::Folded,
    ) -> Result<PartitionState, restore::RestoreError> {
        let truncated = f.truncated(&self.rules);
        let (records, ignored) = (f.fold.records, f.fold.ignored);
        if let (false, Some(s)) = (truncated, PartitionState::from_fold(p, epoch, f.fold)) {
            let next_offset = s.next_offset;
            tracing::info!(
                partition = p,
                epoch,
                records,
                ignored,
                next_offset,
                "restored from the changelog"
            );
            return Ok(s);
        }
        let timeout = Duration::from_secs(5);
        let sp = restore::start_point(base, &self.topic, p, &self.rules, timeout)?;
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
        Ok(s)
    }
}
