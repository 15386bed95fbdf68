//! Reading and writing the state changelog during a restore: fences that make this instance
//! the partitions' owner, and the fold of each partition's records up to its fence (see
//! [`crate::changelog`]).

use super::{replay_from_time, RestoreError};
use crate::state::Rules;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

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
    pub first: Option<(i64, i64)>,
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
    pub fn fence(
        &self,
        partitions: &[i32],
    ) -> Result<std::collections::HashMap<i32, i64>, RestoreError> {
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
        fences: &std::collections::HashMap<i32, i64>,
        rules: &Rules,
    ) -> Result<std::collections::HashMap<i32, Folded>, RestoreError> {
        use crate::changelog::{Fold, Record};
        use rdkafka::message::Message;
        let mut tpl = TopicPartitionList::new();
        for &p in fences.keys() {
            tpl.add_partition_offset(&self.topic, p, Offset::Beginning)?;
        }
        self.reader.assign(&tpl)?;
        let mut folded: std::collections::HashMap<i32, Folded> = fences
            .keys()
            .map(|&p| {
                (
                    p,
                    Folded {
                        fold: Fold::new(*rules),
                        first: None,
                    },
                )
            })
            .collect();
        let mut pending: std::collections::HashSet<i32> = fences.keys().copied().collect();
        // A record is folded only if it directly follows the previous one: the broker may
        // show a later record before an earlier one is readable (see `analytics_kafka::gaps`).
        let mut next: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
        let mut gaps = analytics_kafka::gaps::GapGuard::default();
        let mut last_progress = std::time::Instant::now();
        while !pending.is_empty() {
            if last_progress.elapsed() > Duration::from_secs(30) {
                let _ = self.reader.unassign();
                let mut incomplete: Vec<i32> = pending.into_iter().collect();
                incomplete.sort_unstable();
                return Err(RestoreError::Stalled(incomplete));
            }
            let Some(msg) = self.reader.poll(Duration::from_millis(100)) else {
                continue;
            };
            // Errors are not the end of the read: the reader is idle between restores and
            // queues an error for every failed reconnect while the broker is away; those are
            // stale once it is back. A read that makes no progress fails by the stall timeout.
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "changelog reader error; still reading");
                    continue;
                }
            };
            last_progress = std::time::Instant::now();
            let (p, offset) = (msg.partition(), msg.offset());
            let (Some(f), Some(&fence)) = (folded.get_mut(&p), fences.get(&p)) else {
                continue;
            };
            if offset > fence || !pending.contains(&p) {
                continue;
            }
            if let Some(&expected) = next.get(&p) {
                use analytics_kafka::gaps::Verdict;
                let verdict = gaps.check(p, expected, offset, msg.timestamp().to_millis());
                match verdict {
                    Verdict::InOrder => {}
                    Verdict::Behind => continue,
                    Verdict::Refetch { from } => {
                        self.reader.seek(
                            &self.topic,
                            p,
                            Offset::Offset(from),
                            Duration::from_secs(1),
                        )?;
                        continue;
                    }
                    Verdict::Skip { missing } => tracing::warn!(
                        partition = p,
                        expected,
                        offset,
                        missing,
                        "offsets missing from the changelog: skipping them"
                    ),
                }
            }
            next.insert(p, offset + 1);
            let payload = msg.payload().unwrap_or_default();
            if f.first.is_none() {
                f.first = Some((offset, msg.timestamp().to_millis().unwrap_or(i64::MAX)));
            }
            match Record::decode(payload) {
                Ok(r) => f.fold.apply(offset, payload.len(), r),
                Err(e) => {
                    tracing::warn!(partition = p, offset, error = %e, "unreadable changelog record: the partition will be rebuilt from events");
                    f.fold.refuse(offset, e);
                    pending.remove(&p);
                }
            }
            if offset >= fence {
                pending.remove(&p);
            }
        }
        self.reader.unassign()?;
        Ok(folded)
    }
}
