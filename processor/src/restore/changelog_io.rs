//! Reading and writing the state changelog during a restore: fences that make this instance
//! the partitions' owner, and the fold of each partition's records up to its fence (see
//! [`crate::changelog`]).

use super::{replay_from_time, RestoreError};
use crate::changelog::{Fold, Record};
use crate::state::Rules;
use analytics_kafka::gaps::{Admitted, GapGuard, Position};
use analytics_model::hour::Millis;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Reads and writes the state changelog (see [`crate::changelog`]).
pub struct ChangelogIo {
    pub producer: std::sync::Arc<
        analytics_kafka::producer::Recovering<rdkafka::client::DefaultClientContext>,
    >,
    pub reader: BaseConsumer,
    pub topic: String,
    /// This instance's id, written in its fences (diagnostics only; epochs decide).
    pub owner: String,
    pub runtime: tokio::runtime::Handle,
}

/// A partition's changelog, folded up to this owner's fence.
pub struct Folded {
    pub fold: crate::changelog::Fold,
    /// Offset and timestamp of the first record still in the log (`None`: empty log).
    pub first: Option<(i64, Millis)>,
}

impl Folded {
    /// True when the changelog cannot restore the state: retention deleted records the
    /// checkpointed state may need (the partition's changelog was idle for longer than its
    /// retention), or a record could not be read. The partition is then restored by
    /// replaying events.
    pub fn truncated(&self, rules: &Rules) -> bool {
        if self.fold.unreadable.is_some() {
            return true; // not truncated, but as unusable: see `Fold::unreadable`
        }
        match (self.fold.checkpoint, self.first) {
            (Some((_, watermark)), Some((offset, ts))) => {
                offset > 0 && ts > replay_from_time(rules, watermark)
            }
            _ => false,
        }
    }
}

impl ChangelogIo {
    /// Appends a fence to each partition; returns each partition's new epoch (fence offset).
    pub fn fence(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>, RestoreError> {
        use rdkafka::producer::FutureRecord;
        let payload = crate::changelog::Record::Fence {
            owner: self.owner.clone(),
        }
        .encode();
        let mut futures = Vec::new();
        for &p in partitions {
            let key = p.to_string();
            let record = FutureRecord::to(&self.topic)
                .partition(p)
                .key(&key)
                .payload(&payload);
            let f = self.producer.send_result(record).map_err(|(e, _)| e)?;
            futures.push((p, f));
        }
        self.runtime.block_on(async move {
            let mut epochs = std::collections::HashMap::new();
            for (p, f) in futures {
                let d = f.delivered().await.map_err(|source| RestoreError::Fence {
                    partition: p,
                    source,
                })?;
                epochs.insert(p, d.offset);
            }
            Ok(epochs)
        })
    }

    /// Reads every partition from its first record through its fence, folding as it goes.
    pub fn read(
        &self,
        fences: &HashMap<i32, i64>,
        rules: &Rules,
    ) -> Result<HashMap<i32, Folded>, RestoreError> {
        let mut tpl = TopicPartitionList::new();
        for &p in fences.keys() {
            tpl.add_partition_offset(&self.topic, p, Offset::Beginning)?;
        }
        self.reader.assign(&tpl)?;
        let mut reading = Reading::new(fences, rules);
        let mut last_progress = Instant::now();
        while !reading.pending.is_empty() {
            if last_progress.elapsed() > Duration::from_secs(30) {
                let _ = self.reader.unassign();
                let mut incomplete: Vec<i32> = reading.pending.into_iter().collect();
                incomplete.sort_unstable();
                return Err(RestoreError::Stalled(incomplete));
            }
            let Some(msg) = self.poll() else {
                continue;
            };
            last_progress = Instant::now();
            let seek = |p, from| {
                let to = Offset::Offset(from);
                self.reader.seek(&self.topic, p, to, Duration::from_secs(1))
            };
            reading.take(&msg, seek);
        }
        self.reader.unassign()?;
        Ok(reading.folded)
    }

    /// The next record of the changelog, if one came within 100 ms. Errors are not the end
    /// of the read: the reader is idle between restores and queues an error for every failed
    /// reconnect while the broker is away; those are stale once it is back. A read that
    /// makes no progress fails by the stall timeout.
    fn poll(&self) -> Option<BorrowedMessage<'_>> {
        match self.reader.poll(Duration::from_millis(100))? {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::debug!(error = %e, "changelog reader error; still reading");
                None
            }
        }
    }
}

/// A read of the changelog in progress.
struct Reading<'a> {
    fences: &'a HashMap<i32, i64>,
    folded: HashMap<i32, Folded>,
    /// Partitions not read through their fence yet.
    pending: HashSet<i32>,
    /// The next offset expected per partition, once one record was read. A record is folded
    /// only if it directly follows the previous one: the broker may show a later record
    /// before an earlier one is readable (see `analytics_kafka::gaps`).
    next: HashMap<i32, i64>,
    gaps: GapGuard,
}

impl<'a> Reading<'a> {
    fn new(fences: &'a HashMap<i32, i64>, rules: &Rules) -> Self {
        let folded = fences
            .keys()
            .map(|&p| {
                let f = Folded {
                    fold: Fold::new(*rules),
                    first: None,
                };
                (p, f)
            })
            .collect();
        Self {
            fences,
            folded,
            pending: fences.keys().copied().collect(),
            next: HashMap::new(),
            gaps: GapGuard::reading("the changelog", None),
        }
    }

    /// Folds one record read from the changelog, if it is the next of a pending partition.
    fn take<E: std::fmt::Display>(
        &mut self,
        msg: &BorrowedMessage<'_>,
        seek: impl FnOnce(i32, i64) -> Result<(), E>,
    ) {
        let (p, offset) = (msg.partition(), msg.offset());
        let (Some(f), Some(&fence)) = (self.folded.get_mut(&p), self.fences.get(&p)) else {
            return;
        };
        if offset > fence || !self.pending.contains(&p) {
            return;
        }
        if let Some(&expected) = self.next.get(&p) {
            let timestamp_ms = msg.timestamp().to_millis();
            let at = Position {
                partition: p,
                expected,
                offset,
                timestamp_ms,
            };
            if self.gaps.admit(at, |from| seek(p, from)) != Admitted::Next {
                return;
            }
        }
        self.next.insert(p, offset + 1);
        let payload = msg.payload().unwrap_or_default();
        if f.first.is_none() {
            let ts = msg.timestamp().to_millis().unwrap_or(i64::MAX);
            f.first = Some((offset, Millis(ts)));
        }
        match Record::decode(payload) {
            Ok(r) => f.fold.apply(offset, payload.len(), r),
            Err(e) => {
                tracing::warn!(partition = p, offset, error = %e, "unreadable changelog record: the partition will be rebuilt from events");
                f.fold.refuse(offset, e);
                self.pending.remove(&p);
            }
        }
        if offset >= fence {
            self.pending.remove(&p);
        }
    }
}
