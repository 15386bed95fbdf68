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
use shared::event::{EventKind, Partial};
use shared::hour::hour_start;
use std::collections::BTreeMap;

pub use crate::hashed::{user_hash, PrehashedU128, UserSet};

pub use crate::rules::Rules;

#[derive(Default)]
pub struct HourState {
    pub clicks: u64,
    pub impressions: u64,
    pub users: UserSet,
    pub last_offset: i64,
    pub newest_received_at: i64,
    /// Changed since the last published partial (live offsets only).
    dirty: bool,
    /// Changed since the last changelog delta (replayed offsets included).
    unlogged: bool,
    /// Users first seen since the last changelog delta.
    new_users: Vec<u128>,
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
    pub complete_from_hour: i64,
}

impl StartPoint {
    /// Start of an empty or never-committed partition: everything is complete.
    pub const BEGINNING: StartPoint = StartPoint {
        offset: 0,
        resume_from: 0,
        complete_from_hour: i64::MIN,
    };
}

pub struct PartitionState {
    pub partition: i32,
    /// This owner's epoch in the changelog (the offset of its fence record).
    pub epoch: i64,
    /// Next offset named by the last checkpoint written.
    pub checkpointed: i64,
    pub next_offset: i64,
    pub watermark: i64,
    resume_from: i64,
    complete_from_hour: i64,
    hours: BTreeMap<i64, HourState>,
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
            watermark: i64::MIN,
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

    /// Applies the event at `offset`. `record_ts` is the record's timestamp (receipt time);
    /// `pair` the hash of its (user, id) when it carries an id ([`crate::seen::pair_hash`]).
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        rules: &Rules,
        offset: i64,
        record_ts: i64,
        event_ts: i64,
        user: u128,
        kind: EventKind,
        pair: Option<u128>,
    ) -> Applied {
        self.watermark = self.watermark.max(record_ts);
        self.next_offset = offset + 1;
        let live = offset >= self.resume_from;
        if let Some(pair) = pair {
            if !self
                .seen
                .first_time(rules.dedup, pair, record_ts, self.watermark)
            {
                return Applied::Duplicate { live };
            }
        }
        let hour = hour_start(event_ts);
        if rules.closed(hour, self.watermark) {
            return Applied::DeadLetter { publish: live };
        }
        let h = self.hours.entry(hour).or_default();
        if h.users.insert(user) {
            h.new_users.push(user);
        }
        h.unlogged = true;
        match kind {
            EventKind::Click => h.clicks += 1,
            EventKind::Impression => h.impressions += 1,
        }
        h.last_offset = offset;
        h.newest_received_at = h.newest_received_at.max(record_ts);
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
            let users = std::mem::take(&mut h.new_users);
            if hour < self.complete_from_hour {
                continue;
            }
            let mut chunks: Vec<Vec<u128>> = users
                .chunks(MAX_USERS_PER_DELTA)
                .map(<[u128]>::to_vec)
                .collect();
            if chunks.is_empty() {
                chunks.push(Vec::new());
            }
            for new_users in chunks {
                out.push(Delta {
                    hour,
                    clicks: h.clicks,
                    impressions: h.impressions,
                    last_offset: h.last_offset,
                    newest_received_at: h.newest_received_at,
                    new_users,
                });
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
            if hour < self.complete_from_hour {
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
    pub fn mark_dirty(&mut self, hours: impl IntoIterator<Item = i64>) {
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
    pub fn complete_from_hour(&self) -> i64 {
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
    pub fn hour(&self, hour: i64) -> Option<&HourState> {
        self.hours.get(&hour)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seen::pair_hash;
    use shared::hour::HOUR_MS;

    const RULES: Rules = Rules::new(24 * HOUR_MS, 300_000, 24 * HOUR_MS);
    const H: i64 = 1_699_999_200_000;

    /// What a flush takes: the partials (returned) and the changelog deltas.
    fn drain(s: &mut PartitionState) -> Vec<Partial> {
        let mut v = Vec::new();
        s.take_dirty(&mut v);
        s.take_deltas(&mut Vec::new());
        v
    }

    #[test]
    fn counts_clicks_impressions_and_unique_users_exactly() {
        let mut s = PartitionState::new(3, StartPoint::BEGINNING);
        let (a, b) = (user_hash("alice"), user_hash("bob"));
        s.apply(&RULES, 0, H, H, a, EventKind::Click, None);
        s.apply(
            &RULES,
            1,
            H,
            H + HOUR_MS - 1,
            a,
            EventKind::Impression,
            None,
        );
        s.apply(&RULES, 2, H, H + 5, b, EventKind::Click, None);
        s.apply(&RULES, 3, H, H + HOUR_MS, b, EventKind::Click, None); // next hour
        let mut p = drain(&mut s);
        p.sort_by_key(|p| p.hour);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (
                p[0].clicks,
                p[0].impressions,
                p[0].unique_users,
                p[0].offset
            ),
            (2, 1, 2, 2)
        );
        assert_eq!((p[1].clicks, p[1].unique_users, p[1].offset), (1, 1, 3));
        assert_eq!(p[0].partition, 3);
        assert!(
            drain(&mut s).is_empty(),
            "nothing changed since the last flush"
        );
        assert_eq!(s.next_offset, 4);
    }

    #[test]
    fn same_offsets_give_the_same_partials() {
        let run = || {
            let mut s = PartitionState::new(0, StartPoint::BEGINNING);
            for i in 0..100 {
                let user = user_hash(&format!("u{}", i % 7));
                let kind = if i % 3 == 0 {
                    EventKind::Click
                } else {
                    EventKind::Impression
                };
                s.apply(&RULES, i, H + i, H + i * 1000, user, kind, None);
            }
            drain(&mut s)
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn closed_hours_are_dead_lettered_by_the_log_watermark() {
        let mut s = PartitionState::new(0, StartPoint::BEGINNING);
        let closes_at = H + HOUR_MS + RULES.max_event_age_ms + RULES.max_future_skew_ms;
        assert_eq!(
            s.apply(&RULES, 0, closes_at - 1, H, 1, EventKind::Click, None),
            Applied::Counted { live: true }
        );
        // a later record moves the watermark past the close of hour H
        assert_eq!(
            s.apply(&RULES, 1, closes_at, closes_at, 2, EventKind::Click, None),
            Applied::Counted { live: true }
        );
        assert_eq!(
            s.apply(&RULES, 2, closes_at - 10, H + 1, 3, EventKind::Click, None),
            Applied::DeadLetter { publish: true }
        );
        assert_eq!(s.hour(H).unwrap().clicks, 1);
        drain(&mut s);
        assert_eq!(s.evict(&RULES), 1);
        assert!(s.hour(H).is_none());
    }

    #[test]
    fn dirty_hours_are_not_evicted_before_publication() {
        let mut s = PartitionState::new(0, StartPoint::BEGINNING);
        s.apply(&RULES, 0, H, H, 1, EventKind::Click, None);
        s.apply(
            &RULES,
            1,
            H + 30 * HOUR_MS,
            H + 30 * HOUR_MS,
            1,
            EventKind::Click,
            None,
        );
        assert_eq!(s.evict(&RULES), 0, "hour H still has an unpublished change");
        let published = drain(&mut s);
        assert_eq!(published.len(), 2);
        assert_eq!(s.evict(&RULES), 1);
    }

    #[test]
    fn replayed_offsets_are_not_republished_and_incomplete_hours_never_are() {
        let start = StartPoint {
            offset: 10,
            resume_from: 12,
            complete_from_hour: H,
        };
        let mut s = PartitionState::new(0, start);
        s.apply(&RULES, 10, H, H - 1, 1, EventKind::Click, None); // previous hour: incomplete
        assert!(!s.restored(), "offset 11 is still to be replayed");
        s.apply(&RULES, 11, H, H, 1, EventKind::Click, None); // replayed
        assert!(s.restored(), "next offset 12 is the first live one");
        assert!(
            drain(&mut s).is_empty(),
            "replayed offsets were already published"
        );
        s.apply(&RULES, 12, H, H - 1, 2, EventKind::Click, None); // live, but hour incomplete
        s.apply(&RULES, 13, H, H, 2, EventKind::Impression, None); // live, complete hour
        let p = drain(&mut s);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].hour, p[0].clicks, p[0].impressions, p[0].unique_users),
            (H, 1, 1, 2)
        );
    }

    #[test]
    fn unpublished_partials_can_be_marked_again() {
        let mut s = PartitionState::new(0, StartPoint::BEGINNING);
        s.apply(&RULES, 0, H, H, 1, EventKind::Click, None);
        let p = drain(&mut s);
        s.mark_dirty(p.iter().map(|p| p.hour));
        assert_eq!(drain(&mut s), p);
    }

    #[test]
    fn deltas_carry_new_users_once_and_replayed_offsets_too() {
        let start = StartPoint {
            offset: 0,
            resume_from: 2,
            complete_from_hour: i64::MIN,
        };
        let mut s = PartitionState::new(0, start);
        s.apply(&RULES, 0, H, H, 1, EventKind::Click, None); // replayed: logged, not published
        s.apply(&RULES, 1, H, H, 1, EventKind::Click, None);
        let mut d = Vec::new();
        s.take_deltas(&mut d);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].clicks, d[0].new_users.clone()), (2, vec![1]));
        assert!(drain(&mut s).is_empty());
        s.apply(&RULES, 2, H, H, 1, EventKind::Impression, None);
        let mut d = Vec::new();
        s.take_deltas(&mut d);
        assert_eq!(
            (d[0].clicks, d[0].impressions, d[0].new_users.len()),
            (2, 1, 0)
        );
        let mut none = Vec::new();
        s.take_deltas(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn a_fold_of_the_deltas_restores_the_same_state() {
        use crate::changelog::{Fold, Record};
        let mut live = PartitionState::new(4, StartPoint::BEGINNING);
        let mut fold = Fold::new(RULES);
        fold.apply(0, 1, Record::Fence { owner: "a".into() });
        let mut offset = 1;
        for i in 0..500i64 {
            let user = user_hash(&format!("u{}", i % 37));
            let kind = if i % 4 == 0 {
                EventKind::Click
            } else {
                EventKind::Impression
            };
            // Every third event carries an id, every id is sent twice.
            let pair =
                (i % 3 == 0).then(|| pair_hash(&format!("u{}", i % 37), &(i / 6).to_string()));
            live.apply(&RULES, i, H + i, H + (i % 3) * HOUR_MS, user, kind, pair);
            if i % 50 == 49 {
                let mut d = Vec::new();
                live.take_deltas(&mut d);
                for delta in d {
                    fold.apply(offset, 1, Record::Delta { epoch: 0, delta });
                    offset += 1;
                }
                for (bucket, pairs) in live.take_pairs() {
                    fold.apply(
                        offset,
                        1,
                        Record::Ids {
                            epoch: 0,
                            bucket,
                            pairs,
                        },
                    );
                    offset += 1;
                }
                fold.apply(
                    offset,
                    1,
                    Record::Checkpoint {
                        epoch: 0,
                        next_offset: live.next_offset,
                        watermark: live.watermark,
                        complete_from_hour: live.complete_from_hour(),
                    },
                );
                offset += 1;
            }
        }
        let mut restored = PartitionState::from_fold(4, 0, fold).expect("checkpointed");
        assert_eq!(restored.next_offset, live.next_offset);
        assert!(live.remembered_pairs() > 0);
        assert_eq!(restored.remembered_pairs(), live.remembered_pairs());
        // A re-sent id is a duplicate for both.
        let again = pair_hash("u0", "0");
        for s in [&mut live, &mut restored] {
            assert_eq!(
                s.apply(&RULES, 500, H + 500, H, 1, EventKind::Click, Some(again)),
                Applied::Duplicate { live: true }
            );
        }
        for k in 0..3 {
            let (a, b) = (
                live.hour(H + k * HOUR_MS).unwrap(),
                restored.hour(H + k * HOUR_MS).unwrap(),
            );
            assert_eq!(
                (a.clicks, a.impressions, a.users.len()),
                (b.clicks, b.impressions, b.users.len())
            );
        }
        // Both continue identically.
        live.apply(&RULES, 501, H, H, user_hash("new"), EventKind::Click, None);
        restored.apply(&RULES, 501, H, H, user_hash("new"), EventKind::Click, None);
        assert_eq!(
            drain(&mut live).iter().find(|p| p.hour == H),
            drain(&mut restored).iter().find(|p| p.hour == H)
        );
    }

    #[test]
    fn an_id_counts_once_whatever_its_kind_or_hour_and_no_id_counts_every_time() {
        let mut s = PartitionState::new(0, StartPoint::BEGINNING);
        let (a, b) = (user_hash("a"), user_hash("b"));
        let id = Some(pair_hash("a", "r-1"));
        assert_eq!(
            s.apply(&RULES, 0, H, H, a, EventKind::Click, id),
            Applied::Counted { live: true }
        );
        // The same (user, id) again: as a retry, with another kind, in another hour.
        for (offset, ts, kind) in [
            (1, H, EventKind::Click),
            (2, H + 10, EventKind::Impression),
            (3, H + HOUR_MS, EventKind::Click),
        ] {
            assert_eq!(
                s.apply(&RULES, offset, H + 20, ts, a, kind, id),
                Applied::Duplicate { live: true }
            );
        }
        // Another user with the same id, and events without ids, always count.
        s.apply(
            &RULES,
            4,
            H,
            H,
            b,
            EventKind::Click,
            Some(pair_hash("b", "r-1")),
        );
        s.apply(&RULES, 5, H, H, a, EventKind::Click, None);
        s.apply(&RULES, 6, H, H, a, EventKind::Click, None);
        let h = s.hour(H).unwrap();
        assert_eq!((h.clicks, h.impressions, h.users.len()), (4, 0, 2));
        assert!(s.hour(H + HOUR_MS).is_none());
        assert_eq!(s.remembered_pairs(), 2);
        assert_eq!(s.next_offset, 7, "a duplicate still moves the position");
    }

    #[test]
    fn prehashed_set_holds_distinct_users() {
        let mut set = UserSet::default();
        for i in 0..10_000 {
            set.insert(user_hash(&i.to_string()));
            set.insert(user_hash(&i.to_string()));
        }
        assert_eq!(set.len(), 10_000);
        assert_ne!(user_hash("1"), user_hash("01"));
    }
}
