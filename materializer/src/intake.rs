//! From consumed records to a write batch: decodes partials, remembers the offsets to commit
//! once the batch is durable, and never steps over an offset the broker has not made readable
//! yet ([`analytics_kafka::gaps`]): a skipped partial could be the last one of its hour.

use crate::metrics::Metrics;
use analytics_kafka::gaps::{Admitted, GapGuard, Position};
use analytics_model::event::{Partial, RecordError};
use analytics_model::hour::HourStart;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// A record of the hourly topic this build must not read past.
#[derive(Debug, thiserror::Error)]
#[error("the hourly topic's partition {partition} holds at offset {offset} a {source}: the materializer stops there, before committing it")]
pub struct Refused {
    pub partition: i32,
    pub offset: i64,
    pub source: RecordError,
}

pub struct Intake {
    topic: String,
    capacity: usize,
    /// Partials of the batch being filled.
    batch: Vec<Partial>,
    /// Next offset to commit per partition, accumulated until the batch is durable.
    positions: HashMap<i32, i64>,
    /// Next offset expected per partition (unknown right after an assignment).
    next: HashMap<i32, i64>,
    /// Rebalance generation `next` belongs to.
    generation: u64,
    gaps: GapGuard,
}

impl Intake {
    /// An empty batch of at most `capacity` partials of `topic`, counting offset gaps in
    /// `offset_gaps`.
    pub fn new(topic: String, capacity: usize, offset_gaps: prometheus::IntCounterVec) -> Self {
        Self {
            topic,
            capacity,
            batch: Vec::with_capacity(capacity),
            positions: HashMap::new(),
            next: HashMap::new(),
            generation: 0,
            gaps: GapGuard::reading("the hourly topic", Some(offset_gaps)),
        }
    }

    /// The batch holds `--batch-size` partials.
    pub fn is_full(&self) -> bool {
        self.batch.len() >= self.capacity
    }

    /// Empties the batch: its partials, the newest one per (hour, partition). Their offsets
    /// stay pending until [`Intake::commit`].
    pub fn take_batch(&mut self) -> Vec<Partial> {
        dedupe_newest(self.batch.drain(..))
    }

    /// Commits (asynchronously) the offsets after every partial taken so far; call only once
    /// those partials are durable in both stores. A failed commit is retried with the next.
    pub fn commit<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        if self.positions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &self.positions {
            if let Err(e) = tpl.add_partition_offset(&self.topic, p, Offset::Offset(o)) {
                tracing::warn!(partition = p, error = %e, "cannot commit this offset");
                return;
            }
        }
        match consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) => self.positions.clear(),
            Err(e) => tracing::warn!(error = %e, "offset commit failed; will retry"),
        }
    }

    /// Forgets the expected offsets: after a rebalance (`generation` changed).
    fn reset(&mut self, generation: u64) {
        self.generation = generation;
        self.next.clear();
        self.gaps.reset();
    }

    /// Takes one consumed record (or error) into the batch. A partial of a format newer than
    /// this build reads is refused, and nothing from it on is taken or committed: skipping it
    /// could lose an hour's last partial, and guessing could misread it.
    pub fn accept<C: ConsumerContext>(
        &mut self,
        consumer: &StreamConsumer<C>,
        generation: u64,
        m: KafkaResult<BorrowedMessage<'_>>,
        metrics: &Metrics,
    ) -> Result<(), Refused> {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "consume error");
                return Ok(());
            }
        };
        if generation != self.generation {
            self.reset(generation);
        }
        let (p, offset) = (m.partition(), m.offset());
        if !self.in_sequence(consumer, &m) {
            return Ok(());
        }
        let decoded = Partial::decode(m.payload().unwrap_or_default());
        if let Err(source @ RecordError::UnknownFormat(_)) = decoded {
            return Err(Refused {
                partition: p,
                offset,
                source,
            });
        }
        let next = self.next.entry(p).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        let pos = self.positions.entry(p).or_insert(offset + 1);
        *pos = (*pos).max(offset + 1);
        match decoded {
            Ok(partial) => self.batch.push(partial),
            Err(e) => {
                metrics.undecodable.inc();
                tracing::warn!(
                    partition = p,
                    offset,
                    error = %e,
                    "skipping a record that is not a partial"
                );
            }
        }
        Ok(())
    }

    /// False when the record lies beyond an offset the broker has not shown yet: the
    /// consumer was sought back ([`GapGuard::admit`]). A record already seen (after a seek
    /// back) is taken again: harmless, the stores keep the newest partial by offset.
    fn in_sequence<C: ConsumerContext>(
        &mut self,
        consumer: &StreamConsumer<C>,
        m: &BorrowedMessage<'_>,
    ) -> bool {
        let p = m.partition();
        let expected = match self.next.get(&p) {
            Some(&e) => e,
            None => match self.committed(consumer, p) {
                Some(e) => e,
                None => return true,
            },
        };
        let at = Position {
            partition: p,
            expected,
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
        };
        let topic = &self.topic;
        let seek = |from| {
            let to = Offset::Offset(from);
            tokio::task::block_in_place(|| consumer.seek(topic, p, to, Duration::from_secs(1)))
        };
        if self.gaps.admit(at, seek) == Admitted::Refetching {
            // Until the seek is done, `expected` stays what it was.
            self.next.insert(p, expected);
            return false;
        }
        true
    }

    /// The group's committed offset of `partition`, where fetching started after the
    /// assignment; `None` when unknown (nothing committed yet, or the broker did not say).
    fn committed<C: ConsumerContext>(
        &self,
        consumer: &StreamConsumer<C>,
        partition: i32,
    ) -> Option<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        let got =
            tokio::task::block_in_place(|| consumer.committed_offsets(tpl, Duration::from_secs(2)));
        match got {
            Ok(tpl) => match tpl.find_partition(&self.topic, partition)?.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            },
            Err(e) => {
                tracing::debug!(partition, error = %e, "committed offset unknown");
                None
            }
        }
    }
}

/// Keeps, for each (hour, partition), only the partial with the highest offset.
pub fn dedupe_newest(partials: impl IntoIterator<Item = Partial>) -> Vec<Partial> {
    let mut map: std::collections::HashMap<(HourStart, i32), Partial> = Default::default();
    for p in partials {
        map.entry((p.hour, p.partition))
            .and_modify(|cur| {
                if p.offset > cur.offset {
                    *cur = p;
                }
            })
            .or_insert(p);
    }
    let mut v: Vec<Partial> = map.into_values().collect();
    v.sort_by_key(|p| (p.hour, p.partition));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(hour: i64, partition: i32, offset: i64, clicks: u64) -> Partial {
        Partial {
            hour: HourStart::new(hour * analytics_model::hour::HOUR_MS).unwrap(),
            partition,
            clicks,
            impressions: 0,
            unique_users: 1,
            offset,
            newest_received_at: analytics_model::hour::Millis(0),
        }
    }

    #[test]
    fn dedupe_keeps_the_newest_offset_whatever_the_order() {
        let out = dedupe_newest([
            p(0, 1, 5, 50),
            p(0, 1, 9, 90),
            p(0, 1, 7, 70),
            p(0, 2, 1, 1),
        ]);
        assert_eq!(out, vec![p(0, 1, 9, 90), p(0, 2, 1, 1)]);
        let out = dedupe_newest([p(0, 1, 9, 90), p(0, 1, 5, 50)]);
        assert_eq!(out, vec![p(0, 1, 9, 90)]);
    }
}
