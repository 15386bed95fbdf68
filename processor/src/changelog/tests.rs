use super::*;
use analytics_model::hour::{HourStart, Millis, HOUR_MS};

const RULES: Rules = Rules::new(24 * HOUR_MS, 300_000, 24 * HOUR_MS);
const H: i64 = 1_699_999_200_000;

fn delta(epoch: i64, hour: i64, clicks: u64, users: &[u128]) -> Record {
    Record::Delta {
        epoch,
        delta: Delta {
            hour: HourStart::new(hour).expect("an hour"),
            clicks,
            impressions: 0,
            last_offset: clicks as i64,
            newest_received_at: Millis(hour),
            new_users: users.to_vec(),
        },
    }
}
fn ckpt(epoch: i64, next: i64) -> Record {
    Record::Checkpoint {
        epoch,
        next_offset: next,
        watermark: Millis(H),
        complete_from_hour: Millis::MIN,
    }
}
fn hour(ms: i64) -> HourStart {
    HourStart::new(ms).expect("an hour")
}
fn fence() -> Record {
    Record::Fence { owner: "x".into() }
}
fn fold(records: Vec<Record>) -> Fold {
    let mut f = Fold::new(RULES);
    for (offset, r) in records.into_iter().enumerate() {
        let size = r.encode().len();
        f.apply(
            offset as i64,
            size,
            Record::decode(&r.encode()).expect("round trip"),
        );
    }
    f
}

#[test]
fn records_round_trip() {
    let ids = Record::Ids {
        epoch: 7,
        bucket: 1234,
        pairs: vec![5, u128::MAX],
    };
    for r in [
        fence(),
        delta(7, H, 3, &[1, u128::MAX, 42]),
        ids,
        ckpt(7, 99),
    ] {
        assert_eq!(Record::decode(&r.encode()), Ok(r));
    }
    assert_eq!(Record::decode(&[2, 0, 0]), Err(DecodeError::Malformed)); // a format-0 delta, cut short
    assert_eq!(Record::decode(&[]), Err(DecodeError::Malformed));
    let mut truncated = delta(7, H, 3, &[1, 2]).encode();
    truncated.pop();
    assert_eq!(Record::decode(&truncated), Err(DecodeError::Malformed));
    let mut unknown = ckpt(7, 99).encode();
    unknown[1] = 9;
    assert_eq!(Record::decode(&unknown), Err(DecodeError::UnknownKind(9)));
}

#[test]
fn every_record_names_its_format_and_an_unknown_one_is_refused() {
    for r in [fence(), delta(7, H, 3, &[1]), ckpt(7, 99)] {
        let mut b = r.encode();
        assert_eq!(b[0], 0x80 | FORMAT, "{r:?}");
        b[0] = 0x80 | (FORMAT + 1);
        assert_eq!(
            Record::decode(&b),
            Err(DecodeError::UnknownFormat(FORMAT + 1))
        );
        assert!(DecodeError::UnknownFormat(2)
            .to_string()
            .contains("upgrade this processor"));
    }
}

#[test]
fn deltas_count_once_a_checkpoint_of_their_epoch_follows() {
    // offset 0: fence (epoch 0)
    let f = fold(vec![
        fence(),
        delta(0, H, 2, &[1, 2]),
        ckpt(0, 10),
        delta(0, H, 5, &[3]),
    ]);
    assert_eq!(f.checkpoint, Some((10, Millis(H))));
    let h = &f.hours[&hour(H)];
    assert_eq!(
        (h.clicks, h.users.len()),
        (2, 2),
        "the delta after the last checkpoint is dropped"
    );
}

#[test]
fn users_accumulate_and_counts_are_absolute() {
    let f = fold(vec![
        fence(),
        delta(0, H, 2, &[1, 2]),
        ckpt(0, 10),
        delta(0, H, 4, &[3]),
        delta(0, H + HOUR_MS, 1, &[1]),
        ckpt(0, 20),
    ]);
    assert_eq!(f.hours[&hour(H)].clicks, 4);
    assert_eq!(f.hours[&hour(H)].users.len(), 3);
    assert_eq!(f.hours[&hour(H + HOUR_MS)].users.len(), 1);
    assert_eq!(f.checkpoint, Some((20, Millis(H))));
}

#[test]
fn a_zombie_cannot_change_the_state_after_a_newer_fence() {
    // Owner A (epoch 0) checkpoints, B fences at offset 3; A, paused, then writes a delta
    // and a checkpoint of its old epoch; B writes its own.
    let f = fold(vec![
        fence(),                 // 0: A
        delta(0, H, 2, &[1, 2]), // 1
        ckpt(0, 10),             // 2
        fence(),                 // 3: B, epoch 3
        delta(0, H, 9, &[7, 8]), // 4: zombie A
        ckpt(0, 50),             // 5: zombie A
        delta(3, H, 3, &[3]),    // 6: B
        ckpt(3, 11),             // 7: B
    ]);
    assert_eq!(f.checkpoint, Some((11, Millis(H))));
    assert_eq!(f.hours[&hour(H)].clicks, 3);
    assert_eq!(f.hours[&hour(H)].users.len(), 3);
    assert_eq!(f.ignored, 2);
    assert_eq!(f.previous_epoch, 0, "A held the partition before B");
}

#[test]
fn a_flush_cut_short_by_a_new_owner_is_dropped() {
    let f = fold(vec![
        fence(),
        delta(0, H, 2, &[1]),
        ckpt(0, 10),
        delta(0, H, 5, &[2, 3]),
        fence(),
    ]);
    assert_eq!(f.checkpoint, Some((10, Millis(H))));
    assert_eq!(f.hours[&hour(H)].clicks, 2);
}

#[test]
fn closed_hours_are_dropped_at_checkpoints() {
    let late = H + 40 * HOUR_MS;
    let f = fold(vec![
        fence(),
        delta(0, H, 1, &[1]),
        ckpt(0, 5),
        delta(0, late, 1, &[1]),
        Record::Checkpoint {
            epoch: 0,
            next_offset: 6,
            watermark: Millis(late),
            complete_from_hour: Millis::MIN,
        },
    ]);
    assert!(!f.hours.contains_key(&hour(H)));
    assert!(f.hours.contains_key(&hour(late)));
}
