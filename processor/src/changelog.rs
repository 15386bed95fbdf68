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
use analytics_model::hour::{HourStart, Millis};
use std::collections::BTreeMap;

const FENCE: u8 = 1;
const DELTA: u8 = 2;
const CHECKPOINT: u8 = 3;
const IDS: u8 = 4;

/// The format this build writes; it reads this one and every earlier one.
pub const FORMAT: u8 = 1;

/// The high bit of a record's first byte: set, the byte names the format; clear (format 0),
/// it is the kind.
const NUMBERED: u8 = 0x80;

/// Why a changelog record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("changelog record of format {0}, newer than this build reads ({FORMAT}); upgrade this processor")]
    UnknownFormat(u8),
    #[error("changelog record of unknown kind {0}")]
    UnknownKind(u8),
    #[error("changelog record cut short or of the wrong length")]
    Malformed,
}

/// Largest number of users in one delta record (16 bytes each: well under 1 MB).
pub const MAX_USERS_PER_DELTA: usize = 32_768;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub hour: HourStart,
    pub clicks: u64,
    pub impressions: u64,
    pub last_offset: i64,
    pub newest_received_at: Millis,
    pub new_users: Vec<u128>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Fence {
        owner: String,
    },
    Delta {
        epoch: i64,
        delta: Delta,
    },
    Ids {
        epoch: i64,
        /// The receipt-time bucket ([`crate::seen::Window::bucket`]).
        bucket: i64,
        pairs: Vec<u128>,
    },
    Checkpoint {
        epoch: i64,
        next_offset: i64,
        watermark: Millis,
        /// Hours starting before this instant were never rebuilt completely (see `restore`).
        complete_from_hour: Millis,
    },
}

impl Record {
    /// The record in today's [`FORMAT`].
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![NUMBERED | FORMAT];
        match self {
            Record::Fence { owner } => {
                b.push(FENCE);
                b.extend_from_slice(&0i64.to_le_bytes());
                b.extend_from_slice(owner.as_bytes());
            }
            Record::Delta { epoch, delta: d } => {
                b.reserve(54 + 16 * d.new_users.len());
                b.push(DELTA);
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&d.hour.ms().to_le_bytes());
                b.extend_from_slice(&d.clicks.to_le_bytes());
                b.extend_from_slice(&d.impressions.to_le_bytes());
                b.extend_from_slice(&d.last_offset.to_le_bytes());
                b.extend_from_slice(&d.newest_received_at.0.to_le_bytes());
                b.extend_from_slice(&(d.new_users.len() as u32).to_le_bytes());
                for u in &d.new_users {
                    b.extend_from_slice(&u.to_le_bytes());
                }
            }
            Record::Ids {
                epoch,
                bucket,
                pairs,
            } => {
                b.reserve(22 + 16 * pairs.len());
                b.push(IDS);
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&bucket.to_le_bytes());
                b.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
                for p in pairs {
                    b.extend_from_slice(&p.to_le_bytes());
                }
            }
            Record::Checkpoint {
                epoch,
                next_offset,
                watermark,
                complete_from_hour,
            } => {
                b.push(CHECKPOINT);
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&next_offset.to_le_bytes());
                b.extend_from_slice(&watermark.0.to_le_bytes());
                b.extend_from_slice(&complete_from_hour.0.to_le_bytes());
            }
        }
        b
    }

    /// Reads a record of any format up to [`FORMAT`].
    pub fn decode(b: &[u8]) -> Result<Record, DecodeError> {
        let (&first, rest) = b.split_first().ok_or(DecodeError::Malformed)?;
        if first & NUMBERED == 0 {
            return Self::fields(first, rest); // format 0: the first byte is the kind
        }
        match first & !NUMBERED {
            1 => {
                let (&kind, rest) = rest.split_first().ok_or(DecodeError::Malformed)?;
                Self::fields(kind, rest)
            }
            format => Err(DecodeError::UnknownFormat(format)),
        }
    }

    /// The fields after the kind (the same in formats 0 and 1).
    fn fields(kind: u8, b: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader(b);
        let epoch = r.i64()?;
        Ok(match kind {
            FENCE => Record::Fence {
                owner: String::from_utf8_lossy(r.0).into_owned(),
            },
            DELTA => Record::Delta {
                epoch,
                delta: Delta {
                    hour: HourStart::new(r.i64()?).map_err(|_| DecodeError::Malformed)?,
                    clicks: r.i64()? as u64,
                    impressions: r.i64()? as u64,
                    last_offset: r.i64()?,
                    newest_received_at: Millis(r.i64()?),
                    new_users: r.hashes()?,
                },
            },
            IDS => Record::Ids {
                epoch,
                bucket: r.i64()?,
                pairs: r.hashes()?,
            },
            CHECKPOINT => Record::Checkpoint {
                epoch,
                next_offset: r.i64()?,
                watermark: Millis(r.i64()?),
                complete_from_hour: Millis(r.i64()?),
            },
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.0.split_at_checked(N).ok_or(DecodeError::Malformed)?;
        self.0 = rest;
        head.try_into().map_err(|_| DecodeError::Malformed)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.take::<8>().map(i64::from_le_bytes)
    }
    /// A count, then that many 128-bit hashes, ending the record.
    fn hashes(&mut self) -> Result<Vec<u128>, DecodeError> {
        let n = self.u32()? as usize;
        if self.0.len() != n * 16 {
            return Err(DecodeError::Malformed);
        }
        Ok(self
            .0
            .chunks_exact(16)
            .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
            .collect())
    }
}

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
