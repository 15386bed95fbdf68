//! Offset-gap guard for consumers that must not skip a record.
//!
//! Two broker behaviours, both seen with Tansu 0.6.0 (the project's local broker before
//! nisshi 0.8.1, which shows neither in the tests), can make a fetch return a record beyond
//! the offset asked for, with the records in between still in the log:
//!
//! * Tansu 0.6.0 answers a fetch at an offset in the middle of a stored batch with the
//!   *following* batches only, so a consumer positioned mid-batch (after a seek, or at a
//!   committed offset) never sees the rest of that batch;
//! * Tansu 0.6.0 raises a partition's high watermark before it writes the batch, so while two
//!   produce requests for one partition are in flight a fetch can return the later batch
//!   without the earlier one.
//!
//! Apache Kafka does neither; there a gap is real (compaction, transaction markers) and the
//! guard costs one extra fetch. The guard compares each record's offset with the offset the
//! consumer expects next. A record beyond it is dropped and the consumer seeks back, first to
//! the expected offset, then further back each time (1, 2, 4, … records) until the broker
//! returns a batch that contains the expected offset. Once the broker has shown records
//! before the gap and then again one after it, the gap is real and is skipped — at once for
//! an old record, after `patience` at the live edge (where a write may still be landing), and
//! in any case after ten times `patience`.

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
}

impl Default for GapGuard {
    fn default() -> Self {
        Self::new(DEFAULT_PATIENCE, LIVE_EDGE)
    }
}

impl GapGuard {
    pub fn new(patience: Duration, live_edge: Duration) -> Self {
        Self {
            patience,
            live_edge_ms: live_edge.as_millis() as i64,
            waiting: HashMap::new(),
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
