use super::*;
use crate::seen::pair_hash;
use analytics_model::hour::HOUR_MS;

const RULES: Rules = Rules::new(24 * HOUR_MS, 300_000, 24 * HOUR_MS);
const H: i64 = 1_699_999_200_000;

/// The event at `offset`, received at `received` ms, of time `time` ms.
fn ev(
    offset: i64,
    received: i64,
    time: i64,
    user: u128,
    kind: EventKind,
    pair: Option<u128>,
) -> EventAt {
    EventAt {
        offset,
        received: Millis(received),
        time: Millis(time),
        user,
        kind,
        pair,
    }
}

/// The hour starting at `ms`.
fn hour(ms: i64) -> HourStart {
    HourStart::new(ms).unwrap()
}

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
    s.apply(&RULES, ev(0, H, H, a, EventKind::Click, None));
    s.apply(
        &RULES,
        ev(1, H, H + HOUR_MS - 1, a, EventKind::Impression, None),
    );
    s.apply(&RULES, ev(2, H, H + 5, b, EventKind::Click, None));
    s.apply(&RULES, ev(3, H, H + HOUR_MS, b, EventKind::Click, None)); // next hour
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
            s.apply(&RULES, ev(i, H + i, H + i * 1000, user, kind, None));
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
        s.apply(&RULES, ev(0, closes_at - 1, H, 1, EventKind::Click, None)),
        Applied::Counted { live: true }
    );
    // a later record moves the watermark past the close of hour H
    assert_eq!(
        s.apply(
            &RULES,
            ev(1, closes_at, closes_at, 2, EventKind::Click, None)
        ),
        Applied::Counted { live: true }
    );
    assert_eq!(
        s.apply(
            &RULES,
            ev(2, closes_at - 10, H + 1, 3, EventKind::Click, None)
        ),
        Applied::DeadLetter { publish: true }
    );
    assert_eq!(s.hour(hour(H)).unwrap().clicks, 1);
    drain(&mut s);
    assert_eq!(s.evict(&RULES), 1);
    assert!(s.hour(hour(H)).is_none());
}

#[test]
fn dirty_hours_are_not_evicted_before_publication() {
    let mut s = PartitionState::new(0, StartPoint::BEGINNING);
    s.apply(&RULES, ev(0, H, H, 1, EventKind::Click, None));
    s.apply(
        &RULES,
        ev(
            1,
            H + 30 * HOUR_MS,
            H + 30 * HOUR_MS,
            1,
            EventKind::Click,
            None,
        ),
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
        complete_from_hour: Millis(H),
    };
    let mut s = PartitionState::new(0, start);
    s.apply(&RULES, ev(10, H, H - 1, 1, EventKind::Click, None)); // previous hour: incomplete
    assert!(!s.restored(), "offset 11 is still to be replayed");
    s.apply(&RULES, ev(11, H, H, 1, EventKind::Click, None)); // replayed
    assert!(s.restored(), "next offset 12 is the first live one");
    assert!(
        drain(&mut s).is_empty(),
        "replayed offsets were already published"
    );
    s.apply(&RULES, ev(12, H, H - 1, 2, EventKind::Click, None)); // live, but hour incomplete
    s.apply(&RULES, ev(13, H, H, 2, EventKind::Impression, None)); // live, complete hour
    let p = drain(&mut s);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].hour, p[0].clicks, p[0].impressions, p[0].unique_users),
        (hour(H), 1, 1, 2)
    );
}

#[test]
fn unpublished_partials_can_be_marked_again() {
    let mut s = PartitionState::new(0, StartPoint::BEGINNING);
    s.apply(&RULES, ev(0, H, H, 1, EventKind::Click, None));
    let p = drain(&mut s);
    s.mark_dirty(p.iter().map(|p| p.hour));
    assert_eq!(drain(&mut s), p);
}

#[test]
fn deltas_carry_new_users_once_and_replayed_offsets_too() {
    let start = StartPoint {
        offset: 0,
        resume_from: 2,
        complete_from_hour: Millis::MIN,
    };
    let mut s = PartitionState::new(0, start);
    s.apply(&RULES, ev(0, H, H, 1, EventKind::Click, None)); // replayed: logged, not published
    s.apply(&RULES, ev(1, H, H, 1, EventKind::Click, None));
    let mut d = Vec::new();
    s.take_deltas(&mut d);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].clicks, d[0].new_users.clone()), (2, vec![1]));
    assert!(drain(&mut s).is_empty());
    s.apply(&RULES, ev(2, H, H, 1, EventKind::Impression, None));
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
        let pair = (i % 3 == 0).then(|| pair_hash(&format!("u{}", i % 37), &(i / 6).to_string()));
        live.apply(
            &RULES,
            ev(i, H + i, H + (i % 3) * HOUR_MS, user, kind, pair),
        );
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
            s.apply(
                &RULES,
                ev(500, H + 500, H, 1, EventKind::Click, Some(again))
            ),
            Applied::Duplicate { live: true }
        );
    }
    for k in 0..3 {
        let (a, b) = (
            live.hour(hour(H + k * HOUR_MS)).unwrap(),
            restored.hour(hour(H + k * HOUR_MS)).unwrap(),
        );
        assert_eq!(
            (a.clicks, a.impressions, a.users.len()),
            (b.clicks, b.impressions, b.users.len())
        );
    }
    // Both continue identically.
    live.apply(
        &RULES,
        ev(501, H, H, user_hash("new"), EventKind::Click, None),
    );
    restored.apply(
        &RULES,
        ev(501, H, H, user_hash("new"), EventKind::Click, None),
    );
    assert_eq!(
        drain(&mut live).iter().find(|p| p.hour == hour(H)),
        drain(&mut restored).iter().find(|p| p.hour == hour(H))
    );
}

#[test]
fn an_id_counts_once_whatever_its_kind_or_hour_and_no_id_counts_every_time() {
    let mut s = PartitionState::new(0, StartPoint::BEGINNING);
    let (a, b) = (user_hash("a"), user_hash("b"));
    let id = Some(pair_hash("a", "r-1"));
    assert_eq!(
        s.apply(&RULES, ev(0, H, H, a, EventKind::Click, id)),
        Applied::Counted { live: true }
    );
    // The same (user, id) again: as a retry, with another kind, in another hour.
    for (offset, ts, kind) in [
        (1, H, EventKind::Click),
        (2, H + 10, EventKind::Impression),
        (3, H + HOUR_MS, EventKind::Click),
    ] {
        assert_eq!(
            s.apply(&RULES, ev(offset, H + 20, ts, a, kind, id)),
            Applied::Duplicate { live: true }
        );
    }
    // Another user with the same id, and events without ids, always count.
    s.apply(
        &RULES,
        ev(4, H, H, b, EventKind::Click, Some(pair_hash("b", "r-1"))),
    );
    s.apply(&RULES, ev(5, H, H, a, EventKind::Click, None));
    s.apply(&RULES, ev(6, H, H, a, EventKind::Click, None));
    let h = s.hour(hour(H)).unwrap();
    assert_eq!((h.clicks, h.impressions, h.users.len()), (4, 0, 2));
    assert!(s.hour(hour(H + HOUR_MS)).is_none());
    assert_eq!(s.remembered_pairs(), 2);
    assert_eq!(s.next_offset, 7, "a duplicate still moves the position");
}
