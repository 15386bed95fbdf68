//! Remembered event ids: the (user, id) pairs of one partition seen within the dedup window,
//! so that an event carrying an id counts at most once however often a client re-sends it.
//!
//! A pair is kept as a 128-bit hash (xxh3 of `user`, a NUL byte, `id`: user ids hold no
//! control characters, so the split is unambiguous) in the **bucket** of its receipt time
//! (the record timestamp); a bucket spans a quarter of the window. Like the hour rules in
//! [`crate::state`], everything is judged by the partition's watermark `W`, never by a
//! clock: bucket `b` is **expired** once `end(b) + window <= W`. An expired bucket is
//! ignored by [`SeenIds::first_time`] from that event on, and dropped by [`SeenIds::evict`]
//! at the next flush; so the same offsets always deduplicate the same way, whichever
//! instance replays them. A pair is remembered for at least the window and at most a
//! quarter more.
//!
//! Each bucket is a [`PairSet`] (sorted leaves, 16 to 18 bytes a pair) rather than a hash
//! table (19 to 39).
//!
//! New pairs are written to the changelog as [`crate::changelog::Record::Ids`] with the
//! deltas, before the checkpoint, and restored by the same fold.

use crate::pairs::PairSet;
use analytics_model::hour::Millis;
use std::collections::BTreeMap;

/// Buckets per window: lookups probe at most this many plus one sets.
const BUCKETS_PER_WINDOW: i64 = 4;

/// Hash of a (user, id) pair.
pub fn pair_hash(user: &str, id: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(user.as_bytes());
    h.update(&[0]);
    h.update(id.as_bytes());
    h.digest128()
}

/// The dedup window and the bucket length derived from it (a copy of the rules' window, so
/// that this module needs nothing from [`crate::state`] but the set type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    window_ms: i64,
    bucket_ms: i64,
}

impl Window {
    pub const fn new(window_ms: i64) -> Self {
        let bucket_ms = window_ms / BUCKETS_PER_WINDOW;
        Self {
            window_ms,
            bucket_ms: if bucket_ms > 0 { bucket_ms } else { 1 },
        }
    }

    /// The bucket of receipt time `ts`.
    pub fn bucket(&self, ts: Millis) -> i64 {
        ts.0.div_euclid(self.bucket_ms)
    }

    /// True once no pair of `bucket` may deduplicate at watermark `w`.
    pub fn expired(&self, bucket: i64, w: Millis) -> bool {
        (bucket + 1)
            .saturating_mul(self.bucket_ms)
            .saturating_add(self.window_ms)
            <= w.0
    }
}

/// The remembered pairs of one partition.
#[derive(Default)]
pub struct SeenIds {
    buckets: BTreeMap<i64, PairSet>,
    /// Pairs first seen since the last [`SeenIds::take_unlogged`], by bucket.
    unlogged: BTreeMap<i64, Vec<u128>>,
}

impl SeenIds {
    /// True the first time `pair` is seen within the window (and remembers it, received at
    /// `ts`); false for a repeat.
    pub fn first_time(&mut self, w: Window, pair: u128, ts: Millis, watermark: Millis) -> bool {
        let b = w.bucket(ts);
        // The other live buckets first; the pair's own bucket is searched once, by `insert`.
        let seen = self
            .buckets
            .iter()
            .any(|(&k, set)| k != b && !w.expired(k, watermark) && set.contains(&pair));
        if seen {
            return false;
        }
        if w.expired(b, watermark) {
            // Received so long before the watermark that the pair would be forgotten at
            // once: counted, and not remembered (as if evicted straight away).
            return true;
        }
        if !self.buckets.entry(b).or_default().insert(pair) {
            return false;
        }
        self.unlogged.entry(b).or_default().push(pair);
        true
    }

    /// Drops expired buckets (and their unlogged pairs); returns how many pairs went.
    pub fn evict(&mut self, w: Window, watermark: Millis) -> usize {
        let expired: Vec<i64> = self
            .buckets
            .keys()
            .copied()
            .take_while(|&b| w.expired(b, watermark))
            .collect();
        let mut n = 0;
        for b in expired {
            n += self.buckets.remove(&b).map_or(0, |s| s.len());
            self.unlogged.remove(&b);
        }
        n
    }

    /// Pairs first seen since the last call, by bucket, for the changelog.
    pub fn take_unlogged(&mut self) -> BTreeMap<i64, Vec<u128>> {
        std::mem::take(&mut self.unlogged)
    }

    /// Puts back pairs read from the changelog (already logged).
    pub fn restore(&mut self, bucket: i64, pairs: impl IntoIterator<Item = u128>) {
        self.buckets.entry(bucket).or_default().extend(pairs);
    }

    /// Pairs remembered.
    pub fn len(&self) -> usize {
        self.buckets.values().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.values().all(|s| s.is_empty())
    }

    /// Every bucket and its pairs, for the tests.
    #[cfg(test)]
    pub fn buckets_for_tests(&self) -> impl Iterator<Item = (i64, Vec<u128>)> + '_ {
        self.buckets.iter().map(|(&b, s)| (b, s.iter().collect()))
    }

    /// Bytes allocated for the pairs (every bucket's [`PairSet::allocated_bytes`]), for the
    /// benchmark's bytes per pair.
    pub fn table_bytes(&self) -> usize {
        self.buckets.values().map(PairSet::allocated_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    const WINDOW: i64 = 24 * HOUR;
    const W: Window = Window::new(WINDOW);

    #[test]
    fn a_pair_counts_once_within_the_window() {
        let mut s = SeenIds::default();
        let p = pair_hash("alice", "r-1");
        let t = 1_700_000_000_000;
        assert!(s.first_time(W, p, Millis(t), Millis(t)));
        assert!(!s.first_time(W, p, Millis(t + 1), Millis(t + 1)));
        assert!(!s.first_time(W, p, Millis(t + WINDOW - 1), Millis(t + WINDOW - 1)));
        // Other users may use the same id; other ids are other events.
        assert!(s.first_time(W, pair_hash("bob", "r-1"), Millis(t), Millis(t)));
        assert!(s.first_time(W, pair_hash("alice", "r-2"), Millis(t), Millis(t)));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn pairs_expire_by_watermark_between_one_and_five_quarters_of_the_window() {
        let mut s = SeenIds::default();
        let p = pair_hash("alice", "r-1");
        let t = 1_700_000_000_000;
        assert!(s.first_time(W, p, Millis(t), Millis(t)));
        let bucket_end = (W.bucket(Millis(t)) + 1) * (WINDOW / 4);
        // Still remembered just before its bucket's end plus the window, evicted or not.
        assert!(!s.first_time(W, p, Millis(t + 5), Millis(bucket_end + WINDOW - 1)));
        assert_eq!(s.evict(W, Millis(bucket_end + WINDOW - 1)), 0);
        // From then on forgotten, whether or not eviction has run: deterministic by log.
        let w = bucket_end + WINDOW;
        let mut replay = SeenIds::default();
        assert!(replay.first_time(W, p, Millis(t), Millis(t)));
        assert_eq!(replay.evict(W, Millis(w)), 1);
        assert!(s.first_time(W, p, Millis(w), Millis(w)));
        assert!(replay.first_time(W, p, Millis(w), Millis(w)));
        assert!(w - t >= WINDOW && w - t <= WINDOW + WINDOW / 4);
    }

    #[test]
    fn unlogged_pairs_are_taken_once_and_restore_round_trips() {
        let mut s = SeenIds::default();
        let t = 1_700_000_000_000;
        let (a, b) = (pair_hash("a", "1"), pair_hash("b", "1"));
        s.first_time(W, a, Millis(t), Millis(t));
        s.first_time(W, b, Millis(t + WINDOW / 4), Millis(t + WINDOW / 4));
        let logged = s.take_unlogged();
        assert_eq!(logged.values().map(Vec::len).sum::<usize>(), 2);
        assert!(s.take_unlogged().is_empty());
        let mut restored = SeenIds::default();
        for (bucket, pairs) in logged {
            restored.restore(bucket, pairs);
        }
        assert!(!restored.first_time(W, a, Millis(t + 10), Millis(t + 10)));
        assert!(!restored.first_time(W, b, Millis(t + 10), Millis(t + 10)));
        assert!(restored.take_unlogged().is_empty());
    }

    #[test]
    fn the_pair_hash_separates_user_and_id() {
        assert_ne!(pair_hash("ab", "c"), pair_hash("a", "bc"));
        assert_eq!(pair_hash("a", "b"), pair_hash("a", "b"));
    }
}
