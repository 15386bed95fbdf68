//! Per-partition aggregation state: for every open hour, click and impression counts and the
//! exact set of users seen (as 128-bit hashes of the user id).
//!
//! Everything here is a deterministic function of the partition's log, so any instance that
//! processes the same offsets publishes identical partials:
//!
//! * the **watermark** `W` is the largest record timestamp (receipt time) seen so far;
//! * an event for hour `H` is **dead-lettered** iff `end(H) + max_event_age + max_future_skew <= W`
//!   (the hour closed for writes, judged by the log, not by this machine's clock);
//! * hours that satisfy the same condition are **evicted** once their last partial is published.
//!
//! After a restore that starts in the middle of the log (see `restore`), only hours whose
//! every event lies after the starting point are **complete**; incomplete hours are tracked
//! for their watermark effect but never published.

use crate::changelog::{Delta, Fold, MAX_USERS_PER_DELTA};
use crate::seen::SeenIds;
use analytics_model::event::{EventKind, Partial};
use analytics_model::hour::{HourStart, Millis};
use std::collections::BTreeMap;

pub use crate::hashed::{user_hash, UserSet};

pub use crate::rules::Rules;

#[derive(Default)]
pub struct HourState {
    pub clicks: u64,
    pub impressions: u64,
    pub users: UserSet,
    pub last_offset: i64,
    pub newest_received_at: Millis,
    /// Changed since the last published partial (live offsets only).
    dirty: bool,
    /// Changed since the last changelog delta (replayed offsets included).
    unlogged: bool,
    /// Users already in the changelog: the first `logged` of `users`.
    logged: usize,
}

/// One event at its offset, as [`PartitionState::apply`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventAt {
    pub offset: i64,
    /// The record's timestamp: the receipt time at the command.
    pub received: Millis,
    /// The event's own time, which decides its hour.
    pub time: Millis,
    /// The user's hash ([`user_hash`]).
    pub user: u128,
    pub kind: EventKind,
    /// The hash of its (user, id) when it carries an id ([`crate::seen::pair_hash`]).
    pub pair: Option<u128>,
}

/// What [`PartitionState::apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted in its hour; `live` is false while replaying offsets that were already handled.
    Counted { live: bool },
    /// Its hour was closed: the event belongs in the dead-letter topic.
    /// `publish` is false while replaying offsets that were already handled.
    DeadLetter { publish: bool },
    /// Its (user, id) pair was seen within the dedup window: not counted again.
    Duplicate { live: bool },
}

/// Where a partition's processing starts and what it may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartPoint {
    /// First offset to read.
    pub offset: i64,
    /// Offsets below this were already published and committed by some owner: replay them
    /// into the state without republishing.
    pub resume_from: i64,
    /// Hours starting at or after this instant are complete after the replay.
    pub complete_from_hour: Millis,
}

impl StartPoint {
    /// Start of an empty or never-committed partition: everything is complete.
    pub const BEGINNING: StartPoint = StartPoint {
        offset: 0,
        resume_from: 0,
        complete_from_hour: Millis::MIN,
    };
}

pub struct PartitionState {
    pub partition: i32,
    /// This owner's epoch in the changelog (the offset of its fence record).
    pub epoch: i64,
    /// Next offset named by the last checkpoint written.
    pub checkpointed: i64,
    pub next_offset: i64,
    pub watermark: Millis,
    resume_from: i64,
    complete_from_hour: Millis,
    hours: BTreeMap<HourStart, HourState>,
    /// (user, id) pairs seen within the dedup window.
    seen: SeenIds,
}

impl PartitionState {
    pub fn new(partition: i32, start: StartPoint) -> Self {
        Self {
            partition,
            epoch: -1,
            checkpointed: -1,
            next_offset: start.offset,
            watermark: Millis::MIN,
            resume_from: start.resume_from,
            complete_from_hour: start.complete_from_hour,
            hours: BTreeMap::new(),
            seen: SeenIds::default(),
        }
    }

    /// The state a changelog fold restored, resuming at its checkpoint.
    pub fn from_fold(partition: i32, epoch: i64, fold: Fold) -> Option<Self> {
        let (next_offset, watermark) = fold.checkpoint?;
        let complete_from_hour = fold.complete_from_hour;
        let hours = fold
            .hours
            .into_iter()
            .map(|(hour, r)| {
                let h = HourState {
                    clicks: r.clicks,
                    impressions: r.impressions,
                    // Every restored user is in the changelog already.
                    logged: r.users.len(),
                    users: r.users,
                    last_offset: r.last_offset,
                    newest_received_at: r.newest_received_at,
                    ..HourState::default()
                };
                (hour, h)
            })
            .collect();
        Some(Self {
            partition,
            epoch,
            checkpointed: next_offset,
            next_offset,
            watermark,
            resume_from: next_offset,
            complete_from_hour,
            hours,
            seen: fold.seen,
        })
    }

    /// True once the replay of already-published offsets is over.
    pub fn restored(&self) -> bool {
        self.next_offset >= self.resume_from
    }

    /// Applies one event.
    pub fn apply(&mut self, rules: &Rules, e: EventAt) -> Applied {
        self.watermark = self.watermark.max(e.received);
        self.next_offset = e.offset + 1;
        let live = e.offset >= self.resume_from;
        if let Some(pair) = e.pair {
            if !self
                .seen
                .first_time(rules.dedup, pair, e.received, self.watermark)
            {
                return Applied::Duplicate { live };
            }
        }
        let hour = e.time.hour();
        if rules.closed(hour, self.watermark) {
            return Applied::DeadLetter { publish: live };
        }
        let h = self.hours.entry(hour).or_default();
        h.users.insert(e.user);
        h.unlogged = true;
        match e.kind {
            EventKind::Click => h.clicks += 1,
            EventKind::Impression => h.impressions += 1,
        }
        h.last_offset = e.offset;
        h.newest_received_at = h.newest_received_at.max(e.received);
        h.dirty |= live;
        Applied::Counted { live }
    }

    /// Records that `offset` held something that is not an event (it still moves the position).
    pub fn skip(&mut self, offset: i64) -> bool {
        self.next_offset = offset + 1;
        offset >= self.resume_from
    }

    /// Changelog deltas of complete hours changed since the last call (split so that no
    /// record exceeds [`MAX_USERS_PER_DELTA`] users).
    pub fn take_deltas(&mut self, out: &mut Vec<Delta>) {
        for (&hour, h) in self.hours.iter_mut().filter(|(_, h)| h.unlogged) {
            h.unlogged = false;
            let logged = std::mem::replace(&mut h.logged, h.users.len());
            if hour.start() < self.complete_from_hour {
                continue;
            }
            // At least one delta (the counts changed), each of at most MAX_USERS_PER_DELTA.
            let mut users = h.users.since(logged).peekable();
            loop {
                let new_users: Vec<u128> = users.by_ref().take(MAX_USERS_PER_DELTA).collect();
                out.push(Delta {
                    hour,
                    clicks: h.clicks,
                    impressions: h.impressions,
                    last_offset: h.last_offset,
                    newest_received_at: h.newest_received_at,
                    new_users,
                });
                if users.peek().is_none() {
                    break;
                }
            }
        }
    }

    /// (user, id) pairs first seen since the last call, by receipt bucket, for the changelog.
    pub fn take_pairs(&mut self) -> BTreeMap<i64, Vec<u128>> {
        self.seen.take_unlogged()
    }

    /// (user, id) pairs remembered.
    pub fn remembered_pairs(&self) -> usize {
        self.seen.len()
    }

    /// Bytes of the remembered pairs' tables.
    pub fn pair_table_bytes(&self) -> usize {
        self.seen.table_bytes()
    }

    /// Partials of complete hours changed since the last call; clears the change marks.
    pub fn take_dirty(&mut self, out: &mut Vec<Partial>) {
        for (&hour, h) in self.hours.iter_mut().filter(|(_, h)| h.dirty) {
            h.dirty = false;
            if hour.start() < self.complete_from_hour {
                continue;
            }
            out.push(Partial {
                hour,
                partition: self.partition,
                clicks: h.clicks,
                impressions: h.impressions,
                unique_users: h.users.len() as u64,
                offset: h.last_offset,
                newest_received_at: h.newest_received_at,
            });
        }
    }

    /// Marks hours dirty again after their partials could not be published.
    pub fn mark_dirty(&mut self, hours: impl IntoIterator<Item = HourStart>) {
        for hour in hours {
            if let Some(h) = self.hours.get_mut(&hour) {
                h.dirty = true;
            }
        }
    }

    /// Drops closed hours whose last partial has been published; returns how many.
    pub fn evict(&mut self, rules: &Rules) -> usize {
        let before = self.hours.len();
        let w = self.watermark;
        self.hours
            .retain(|&hour, h| h.dirty || h.unlogged || !rules.closed(hour, w));
        self.seen.evict(rules.dedup, w);
        before - self.hours.len()
    }

    /// Hours starting before this instant are incomplete and never published.
    pub fn complete_from_hour(&self) -> Millis {
        self.complete_from_hour
    }

    pub fn open_hours(&self) -> usize {
        self.hours.len()
    }

    /// Number of (hour, user) pairs held.
    pub fn tracked_users(&self) -> usize {
        self.hours.values().map(|h| h.users.len()).sum()
    }

    /// Totals of one hour, for tests and diagnostics.
    pub fn hour(&self, hour: HourStart) -> Option<&HourState> {
        self.hours.get(&hour)
    }
}

#[cfg(test)]
mod tests;
