//! Offset-gap guard for consumers that must not skip a record: every consumer of the project
//! (the processor's events loop, its changelog restore, the materializer) passes each record
//! through [`GapGuard::admit`], which judges it and acts on the verdict in one place.
//!
//! The guard compares each record's offset with the offset the consumer expects next. A
//! record beyond it is dropped and the consumer seeks back, first to the expected offset,
//! then further back each time (1, 2, 4, … records) until the broker returns a batch that
//! contains the expected offset. Once the broker has shown records before the gap and then
//! again one after it, the gap is real and is skipped — at once for an old record, after
//! `patience` at the live edge (where a write may still be landing), and in any case after
//! ten times `patience`.
//!
//! What it covers, and the test that shows each case:
//!
//! | case | broker | what the guard does | test |
//! | --- | --- | --- | --- |
//! | a fetch at an offset inside a stored batch answered with the *following* batches | Tansu 0.6.0 (the project's former local broker); not nisshi 0.8.1, not Apache Kafka | seeks back until the batch comes, reads it whole | `a_fetch_that_starts_mid_batch_steps_back_until_the_batch_comes`; `e2e/tests/broker_gaps.rs` against the real broker |
//! | a later batch readable before an earlier one (the high watermark raised before the write) | Tansu 0.6.0 | waits at the live edge until the earlier batch lands | `at_the_live_edge_a_gap_is_waited_for` |
//! | offsets removed by **compaction** (the hourly topic is compacted) or taken by **transaction markers**, which are never delivered | Apache Kafka | a real gap: proven by one refetch that shows records on both sides, then skipped | `a_real_gap_behind_old_records_is_skipped_once_proven` |
//! | a gap at the front of a compacted or truncated log, with nothing readable before it | Apache Kafka | refetched from offset 0 at most, then skipped after ten patiences | `refetching_a_gap_many_times_never_steps_past_the_start`, `a_gap_that_cannot_be_proven_is_skipped_after_ten_patiences` |
//! | a record before the expected offset (read again after a seek back) | any | already handled: not applied twice | `in_order_and_behind_records_pass_without_waiting` |
//!
//! On Apache Kafka only the last three happen, and each real gap costs a few extra fetches
//! (a compacted hourly topic read from its start pays that once per gap). The guard stays
//! because a broker that skips must never cost an event, and a real gap must never stall a
//! consumer.

use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a gap at the live edge is re-fetched before it is taken as real.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(2);

/// Records younger than this (by record timestamp) are at the live edge.
pub const LIVE_EDGE: Duration = Duration::from_secs(60);

/// What to do with a consumed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The expected offset: process it.
    InOrder,
    /// Before the expected offset (read again after a seek back): already handled.
    Behind,
    /// Beyond the expected offset: drop it and seek to `from`.
    Refetch { from: i64 },
    /// Beyond the expected offset, and the missing offsets proved to hold nothing readable:
    /// process it.
    Skip { missing: i64 },
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    expected: i64,
    since: Instant,
    /// How far before `expected` the last seek went.
    step: i64,
    /// The broker returned records before `expected` since the last seek.
    saw_before: bool,
}

/// Per-partition gap state of one consumer.
#[derive(Debug)]
pub struct GapGuard {
    patience: Duration,
    live_edge_ms: i64,
    waiting: HashMap<i32, Waiting>,
    /// What the consumer reads, for the logs ("the events topic").
    what: &'static str,
    /// `{service}_offset_gaps_total{outcome}` ([`crate::metrics::offset_gaps`]), if counted.
    counter: Option<IntCounterVec>,
}

impl Default for GapGuard {
    fn default() -> Self {
        Self::new(DEFAULT_PATIENCE, LIVE_EDGE)
    }
}

/// What the consumer does with a record [`GapGuard::admit`] judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// The expected record, or the first after a real gap: process it.
    Next,
    /// Before the expected offset, read again after a seek back: already processed.
    Again,
    /// Beyond the expected offset: dropped, and the consumer was sought back; expect the
    /// same offset as before.
    Refetching,
}

/// Where a consumed record lies, for [`GapGuard::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    /// The offset the consumer expects next.
    pub expected: i64,
    pub offset: i64,
    /// The record's timestamp, if it has one.
    pub timestamp_ms: Option<i64>,
}

impl GapGuard {
    pub fn new(patience: Duration, live_edge: Duration) -> Self {
        Self {
            patience,
            live_edge_ms: live_edge.as_millis() as i64,
            waiting: HashMap::new(),
            what: "the topic",
            counter: None,
        }
    }

    /// The guard of a consumer of `what` (named in its logs), counting refetches and skips in
    /// `counter` when given.
    pub fn reading(what: &'static str, counter: Option<IntCounterVec>) -> Self {
        Self {
            what,
            counter,
            ..Self::default()
        }
    }

    /// Judges the record at `at` and acts on the verdict: on a refetch it calls `seek` with
    /// the offset to fetch from, and it logs and counts refetches and skips. The one place
    /// every consumer handles a gap.
    pub fn admit<E: std::fmt::Display>(
        &mut self,
        at: Position,
        seek: impl FnOnce(i64) -> Result<(), E>,
    ) -> Admitted {
        let Position {
            partition,
            expected,
            offset,
            ..
        } = at;
        match self.check(partition, expected, offset, at.timestamp_ms) {
            Verdict::InOrder => Admitted::Next,
            Verdict::Behind => Admitted::Again,
            Verdict::Skip { missing } => {
                self.count("skipped");
                tracing::warn!(
                    partition,
                    expected,
                    offset,
                    missing,
                    what = self.what,
                    "offsets missing: skipping them"
                );
                Admitted::Next
            }
            Verdict::Refetch { from } => {
                self.count("refetched");
                if from == expected {
                    tracing::info!(
                        partition,
                        expected,
                        offset,
                        what = self.what,
                        "record beyond the expected offset: fetching again"
                    );
                }
                if let Err(e) = seek(from) {
                    tracing::warn!(partition, error = %e, what = self.what, "seek failed");
                }
                Admitted::Refetching
            }
        }
    }

    fn count(&self, outcome: &str) {
        if let Some(c) = &self.counter {
            c.with_label_values(&[outcome]).inc();
        }
    }

    /// Judges the record at `offset` of `partition` when the consumer expects `expected`;
    /// `record_ms` is the record's timestamp. In-order records (the hot path) cost a compare:
    /// the clocks are read only for a gap.
    pub fn check(
        &mut self,
        partition: i32,
        expected: i64,
        offset: i64,
        record_ms: Option<i64>,
    ) -> Verdict {
        if offset == expected && self.waiting.is_empty() {
            return Verdict::InOrder;
        }
        self.check_at(
            partition,
            expected,
            offset,
            record_ms,
            analytics_model::clock::now_ms(),
            Instant::now(),
        )
    }

    /// [`Self::check`] at the given wall-clock time (`now_ms`) and monotonic instant.
    fn check_at(
        &mut self,
        partition: i32,
        expected: i64,
        offset: i64,
        record_ms: Option<i64>,
        now_ms: i64,
        now: Instant,
    ) -> Verdict {
        if offset == expected {
            self.waiting.remove(&partition);
            return Verdict::InOrder;
        }
        if offset < expected {
            if let Some(w) = self.waiting.get_mut(&partition) {
                if w.expected == expected {
                    w.saw_before = true;
                }
            }
            return Verdict::Behind;
        }
        let missing = offset - expected;
        let w = match self.waiting.get_mut(&partition) {
            Some(w) if w.expected == expected => w,
            _ => {
                self.waiting.insert(
                    partition,
                    Waiting {
                        expected,
                        since: now,
                        step: 0,
                        saw_before: false,
                    },
                );
                return Verdict::Refetch { from: expected };
            }
        };
        let waited = now.duration_since(w.since);
        let live = record_ms.is_none_or(|ts| now_ms.saturating_sub(ts) < self.live_edge_ms);
        let proven = w.saw_before && (!live || waited >= self.patience);
        if proven || waited >= self.patience * 10 {
            self.waiting.remove(&partition);
            return Verdict::Skip { missing };
        }
        if !w.saw_before {
            // Doubling, but never further back than the partition's start: a gap at the
            // front of a compacted or truncated log is refetched from 0 until it is proven,
            // however many times (the step must not overflow).
            w.step = w.step.saturating_mul(2).clamp(1, expected.max(1));
        }
        w.saw_before = false;
        Verdict::Refetch {
            from: expected.saturating_sub(w.step).max(0),
        }
    }

    /// Forgets every pending gap (after a rebalance).
    pub fn reset(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_700_000_000_000;
    const OLD_MS: i64 = NOW_MS - 120_000;

    fn guard() -> GapGuard {
        GapGuard::new(Duration::from_secs(2), Duration::from_secs(60))
    }

    #[test]
    fn in_order_and_behind_records_pass_without_waiting() {
        let mut g = guard();
        let t = Instant::now();
        assert_eq!(
            g.check_at(0, 5, 5, Some(NOW_MS), NOW_MS, t),
            Verdict::InOrder
        );
        assert_eq!(
            g.check_at(0, 5, 4, Some(NOW_MS), NOW_MS, t),
            Verdict::Behind
        );
    }

    #[test]
    fn a_fetch_that_starts_mid_batch_steps_back_until_the_batch_comes() {
        // Batch 40..=47 stored; the consumer expects 45, the broker answers from 48.
        let mut g = guard();
        let t = Instant::now();
        let mut seeks = Vec::new();
        loop {
            match g.check_at(0, 45, 48, Some(OLD_MS), NOW_MS, t) {
                Verdict::Refetch { from } if from > 40 => seeks.push(from),
                Verdict::Refetch { from } => {
                    seeks.push(from);
                    break;
                }
                other => panic!("unexpected {other:?} after {seeks:?}"),
            }
        }
        assert_eq!(seeks, vec![45, 44, 43, 41, 37]);
        // From 37 the broker returns batch 32..=39 and batch 40..=47: records before the gap,
        // then the expected one.
        assert_eq!(
            g.check_at(0, 45, 39, Some(OLD_MS), NOW_MS, t),
            Verdict::Behind
        );
        assert_eq!(
            g.check_at(0, 45, 44, Some(OLD_MS), NOW_MS, t),
            Verdict::Behind
        );
        assert_eq!(
            g.check_at(0, 45, 45, Some(OLD_MS), NOW_MS, t),
            Verdict::InOrder
        );
    }

    #[test]
    fn refetching_a_gap_many_times_never_steps_past_the_start() {
        // The broker keeps answering 2 000 for 1 000 (a compacted log) without ever showing
        // an earlier record: the seeks double down to offset 0 and stay there.
        let mut g = guard();
        let t = Instant::now();
        let mut last = i64::MAX;
        for _ in 0..200 {
            match g.check_at(0, 1_000, 2_000, Some(NOW_MS), NOW_MS, t) {
                Verdict::Refetch { from } => {
                    assert!((0..=1_000).contains(&from), "seek to {from}");
                    last = from;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(last, 0);
    }

    #[test]
    fn a_real_gap_behind_old_records_is_skipped_once_proven() {
        let mut g = guard();
        let t = Instant::now();
        assert_eq!(
            g.check_at(0, 10, 15, Some(OLD_MS), NOW_MS, t),
            Verdict::Refetch { from: 10 }
        );
        assert_eq!(
            g.check_at(0, 10, 15, Some(OLD_MS), NOW_MS, t),
            Verdict::Refetch { from: 9 }
        );
        assert_eq!(
            g.check_at(0, 10, 9, Some(OLD_MS), NOW_MS, t),
            Verdict::Behind
        );
        assert_eq!(
            g.check_at(0, 10, 15, Some(OLD_MS), NOW_MS, t),
            Verdict::Skip { missing: 5 },
            "9 then 15: nothing readable in between"
        );
    }

    #[test]
    fn at_the_live_edge_a_gap_is_waited_for() {
        let mut g = guard();
        let t0 = Instant::now();
        assert_eq!(
            g.check_at(3, 40, 41, Some(NOW_MS), NOW_MS, t0),
            Verdict::Refetch { from: 40 }
        );
        assert_eq!(
            g.check_at(3, 40, 41, Some(NOW_MS), NOW_MS, t0),
            Verdict::Refetch { from: 39 }
        );
        assert_eq!(
            g.check_at(3, 40, 39, Some(NOW_MS), NOW_MS, t0),
            Verdict::Behind
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            g.check_at(3, 40, 41, Some(NOW_MS), NOW_MS, t1),
            Verdict::Refetch { from: 39 },
            "the batch at 40 may still be landing"
        );
        // The missing record shows up: in order, and the wait is over.
        assert_eq!(
            g.check_at(3, 40, 40, Some(NOW_MS), NOW_MS, t1),
            Verdict::InOrder
        );
        // A gap that stays: skipped after the patience, once proven.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(
            g.check_at(3, 50, 52, Some(NOW_MS), NOW_MS, t2),
            Verdict::Refetch { from: 50 }
        );
        assert_eq!(
            g.check_at(3, 50, 49, Some(NOW_MS), NOW_MS, t2),
            Verdict::Behind
        );
        let t3 = t2 + Duration::from_secs(2);
        assert_eq!(
            g.check_at(3, 50, 52, Some(NOW_MS), NOW_MS, t3),
            Verdict::Skip { missing: 2 }
        );
    }

    #[test]
    fn a_gap_that_cannot_be_proven_is_skipped_after_ten_patiences() {
        // The log starts after the expected offset (retention): nothing before the gap ever
        // comes back.
        let mut g = guard();
        let t0 = Instant::now();
        assert!(matches!(
            g.check_at(1, 5, 100, Some(OLD_MS), NOW_MS, t0),
            Verdict::Refetch { .. }
        ));
        let t1 = t0 + Duration::from_secs(19);
        assert!(matches!(
            g.check_at(1, 5, 100, Some(OLD_MS), NOW_MS, t1),
            Verdict::Refetch { from: 4 }
        ));
        let t2 = t0 + Duration::from_secs(20);
        assert_eq!(
            g.check_at(1, 5, 100, Some(OLD_MS), NOW_MS, t2),
            Verdict::Skip { missing: 95 }
        );
    }

    #[test]
    fn admit_seeks_on_a_refetch_and_counts_what_it_did() {
        let counter = IntCounterVec::new(prometheus::Opts::new("gaps", "h"), &["outcome"]).unwrap();
        let mut g = GapGuard::reading("the test topic", Some(counter.clone()));
        let at = |expected, offset| Position {
            partition: 0,
            expected,
            offset,
            timestamp_ms: Some(OLD_MS),
        };
        let mut sought = Vec::new();
        let mut seek = |from| {
            sought.push(from);
            Ok::<_, std::convert::Infallible>(())
        };
        assert_eq!(g.admit(at(5, 5), &mut seek), Admitted::Next);
        assert_eq!(g.admit(at(6, 9), &mut seek), Admitted::Refetching);
        assert_eq!(g.admit(at(6, 5), &mut seek), Admitted::Again);
        assert_eq!(
            g.admit(at(6, 9), &mut seek),
            Admitted::Next,
            "proven: skipped"
        );
        assert_eq!(sought, vec![6]);
        assert_eq!(counter.with_label_values(&["refetched"]).get(), 1);
        assert_eq!(counter.with_label_values(&["skipped"]).get(), 1);
    }

    #[test]
    fn partitions_are_independent() {
        let mut g = guard();
        let t = Instant::now();
        assert_eq!(
            g.check_at(1, 5, 7, Some(NOW_MS), NOW_MS, t),
            Verdict::Refetch { from: 5 }
        );
        assert_eq!(
            g.check_at(2, 5, 7, Some(NOW_MS), NOW_MS, t),
            Verdict::Refetch { from: 5 }
        );
    }
}
