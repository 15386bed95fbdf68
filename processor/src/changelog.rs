//! The processor's state changelog: how a partition's state is restored in time proportional
//! to the state, not to the events behind it (in the way Kafka Streams does it, without
//! transactions).
//!
//! Partition `p` of the changelog topic belongs to partition `p` of the events topic. It holds:
//!
//! * **fence** records: a new owner of `p` first appends a fence; the fence's offset becomes the
//!   owner's *epoch*, carried by every record it writes afterwards;
//! * **delta** records: for one hour, the users first seen since the previous flush (128-bit
//!   hashes) and the absolute click and impression counts;
//! * **ids** records: the (user, id) pairs first seen since the previous flush (128-bit
//!   hashes) for one receipt-time bucket of [`crate::seen`];
//! * **checkpoint** records: the next events offset and the watermark, written only after the
//!   flush's partials, deltas and ids were acknowledged.
//!
//! Restoring folds the partition up to the owner's own fence: deltas count only once a
//! checkpoint of the same epoch follows them (a flush cut short leaves deltas without a
//! checkpoint, which are dropped); a record of an older epoch than the newest seen is ignored,
//! so a paused or partitioned former owner (a zombie) cannot change the state; hours closed
//! at a checkpoint's watermark are dropped, so the fold's memory stays bounded by the open
//! window. Processing then resumes at the last checkpoint's offset.
//!
//! The topic is deleted by time (`retention.ms` = lateness window + 2 days). That is safe
//! because every delta of a still-open hour is younger than the window plus one hour plus
//! twice the skew; when the log was truncated beyond that (a partition idle for longer than
//! the retention), the restore notices it and falls back to replaying events
//! ([`crate::restore`]). Compaction would not be safe: it keeps the last record per key
//! whoever wrote it, so a zombie's record could replace a fenced owner's.
//!
//! **Format.** Every record starts with its format: a byte with the high bit set and the
//! format number in the others ([`FORMAT`], now 1), then the kind and the fields below.
//! Records written before formats were numbered (format 0) start with the kind itself
//! (1 to 4, high bit clear) and have the same fields, so both are read. A record of a
//! format this build does not know, or one that does not decode, is never guessed at:
//! [`Record::decode`] says why, and the restore ([`crate::restore`]) then rebuilds that
//! partition by replaying events, which is exact (slower) whatever the changelog holds.
//! `processor/fixtures/` keeps a changelog of each format, which the tests restore.

use crate::hashed::UserSet;
use crate::rules::Rules;
use crate::seen::SeenIds;
pub use analytics_model::changelog::{DecodeError, Delta, Record, FORMAT, MAX_USERS_PER_DELTA};
use analytics_model::hour::{HourStart, Millis};
use std::collections::BTreeMap;
/// One hour of restored state.
#[derive(Default, Debug)]
pub struct RestoredHour {
    pub clicks: u64,
    pub impressions: u64,
    pub users: UserSet,
    pub last_offset: i64,
    pub newest_received_at: Millis,
}

/// Folds changelog records (in offset order) into the state as of the last valid checkpoint.
pub struct Fold {
    rules: Rules,
    epoch: i64,
    /// The epoch that was current before the newest one (before the restoring owner's fence).
    pub previous_epoch: i64,
    tentative: Vec<Delta>,
    tentative_pairs: Vec<(i64, Vec<u128>)>,
    pub hours: BTreeMap<HourStart, RestoredHour>,
    /// The (user, id) pairs remembered as of the last valid checkpoint.
    pub seen: SeenIds,
    /// `(next_offset, watermark)` of the last valid checkpoint.
    pub checkpoint: Option<(i64, Millis)>,
    /// `complete_from_hour` of the last valid checkpoint.
    pub complete_from_hour: Millis,
    pub records: u64,
    pub bytes: u64,
    pub ignored: u64,
    /// The first record that could not be read, and why: the fold stops there and the
    /// partition is rebuilt by replaying events instead.
    pub unreadable: Option<(i64, DecodeError)>,
}

impl Fold {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            epoch: i64::MIN,
            previous_epoch: i64::MIN,
            tentative: Vec::new(),
            tentative_pairs: Vec::new(),
            hours: BTreeMap::new(),
            seen: SeenIds::default(),
            checkpoint: None,
            complete_from_hour: Millis::MIN,
            records: 0,
            bytes: 0,
            ignored: 0,
            unreadable: None,
        }
    }

    /// Notes that the record at `offset` could not be read: the fold is not usable.
    pub fn refuse(&mut self, offset: i64, error: DecodeError) {
        self.unreadable.get_or_insert((offset, error));
    }

    /// Applies the record stored at `offset` (`size` bytes).
    pub fn apply(&mut self, offset: i64, size: usize, record: Record) {
        self.records += 1;
        self.bytes += size as u64;
        let epoch = match &record {
            Record::Fence { .. } => offset,
            Record::Delta { epoch, .. }
            | Record::Ids { epoch, .. }
            | Record::Checkpoint { epoch, .. } => *epoch,
        };
        if epoch < self.epoch {
            self.ignored += 1; // written by an owner that had been fenced off: a zombie
            return;
        }
        if epoch > self.epoch {
            // A newer owner (its fence, or its first record if the fence was deleted):
            // whatever the previous owner wrote after its last checkpoint never counted.
            self.previous_epoch = self.epoch;
            self.epoch = epoch;
            self.tentative.clear();
            self.tentative_pairs.clear();
        }
        match record {
            Record::Fence { .. } => {}
            Record::Delta { delta, .. } => self.tentative.push(delta),
            Record::Ids { bucket, pairs, .. } => self.tentative_pairs.push((bucket, pairs)),
            Record::Checkpoint {
                next_offset,
                watermark,
                complete_from_hour,
                ..
            } => {
                for d in self.tentative.drain(..) {
                    let h = self.hours.entry(d.hour).or_default();
                    h.users.extend(d.new_users);
                    h.clicks = d.clicks;
                    h.impressions = d.impressions;
                    h.last_offset = d.last_offset;
                    h.newest_received_at = d.newest_received_at;
                }
                for (bucket, pairs) in self.tentative_pairs.drain(..) {
                    self.seen.restore(bucket, pairs);
                }
                let rules = self.rules;
                self.hours.retain(|&hour, _| !rules.closed(hour, watermark));
                self.seen.evict(rules.dedup, watermark);
                self.checkpoint = Some((next_offset, watermark));
                self.complete_from_hour = complete_from_hour;
            }
        }
    }
}

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests;

/// A synthetic changelog of one partition for measurements: `hours` consecutive hours from
/// `start`, `users_per_hour` distinct users each, a delta and a checkpoint
/// `checkpoints_per_hour` times an hour (every 5 s for 720), after a fence at offset 0.
pub fn synthetic_log(
    start: HourStart,
    hours: i64,
    users_per_hour: usize,
    checkpoints_per_hour: usize,
) -> Vec<Vec<u8>> {
    let mut log: Vec<Vec<u8>> = vec![Record::Fence { owner: "m".into() }.encode()];
    let mut next = 0i64;
    let per = users_per_hour / checkpoints_per_hour;
    for h in 0..hours {
        let hour = start.plus_hours(h);
        for c in 0..checkpoints_per_hour {
            let base = (h as u128) << 64 | (c * per) as u128;
            next += 3 * per as i64;
            let delta = Delta {
                hour,
                clicks: next as u64,
                impressions: 0,
                last_offset: next,
                newest_received_at: hour.start(),
                new_users: (0..per as u128).map(|i| base + i).collect(),
            };
            log.push(Record::Delta { epoch: 0, delta }.encode());
            let checkpoint = Record::Checkpoint {
                epoch: 0,
                next_offset: next,
                watermark: hour.start().plus(c as i64 * 5000),
                complete_from_hour: Millis::MIN,
            };
            log.push(checkpoint.encode());
        }
    }
    log
}

/// Measurement, not a test of behaviour: `cargo test --release -p processor -- --ignored
/// --nocapture day_of_state`. Builds one partition's changelog for a full day (24 hours,
/// 100 000 distinct users per hour in this partition, a checkpoint every 5 s) and times its
/// decoding and folding (`e2e/tests/restore_day.rs` times reading it from the broker).
#[cfg(test)]
mod measure {
    use super::*;
    use analytics_model::hour::HOUR_MS;

    #[test]
    #[ignore]
    fn day_of_state() {
        let rules = Rules::new(24 * HOUR_MS, 300_000, 24 * HOUR_MS);
        let start = Millis(1_700_000_000_000).hour();
        let log = synthetic_log(start, 24, 100_000, 720);
        let bytes: usize = log.iter().map(Vec::len).sum();
        let t = std::time::Instant::now();
        let mut fold = Fold::new(rules);
        for (offset, r) in log.iter().enumerate() {
            fold.apply(offset as i64, r.len(), Record::decode(r).expect("valid"));
        }
        let pairs: usize = fold.hours.values().map(|h| h.users.len()).sum();
        println!(
            "day of state: {} records, {:.1} MB, {} (hour, user) pairs restored in {:.2} s",
            log.len(),
            bytes as f64 / 1e6,
            pairs,
            t.elapsed().as_secs_f64()
        );
        assert!(pairs > 2_000_000);
    }
}
