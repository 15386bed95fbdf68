//! Changelogs written by earlier builds, kept as bytes in `processor/fixtures/`, that every
//! later build must restore to the same state: a restore after an upgrade reads what the
//! previous version wrote. A format change adds a fixture (written by [`write_fixture`]) and
//! never edits one that shipped.

use super::*;
use analytics_model::hour::{HourStart, Millis, HOUR_MS};
use std::fmt::Write;

const RULES: Rules = Rules::new(24 * HOUR_MS, 300_000, 24 * HOUR_MS);
/// 2023-11-14T22:00:00Z.
const H: i64 = 1_699_999_200_000;
/// The receipt-time bucket of `H` ([`crate::seen::Window::bucket`] of a 24 h window: 6 h buckets).
const BUCKET: i64 = H / (6 * HOUR_MS);

/// The scenario every fixture holds: an owner's checkpointed state, its flush cut short by a
/// new owner, a zombie's delta, the new owner's checkpoint, and the restoring owner's fence.
fn scenario() -> Vec<Record> {
    let delta =
        |epoch, hour: i64, clicks, impressions, last_offset: i64, users: &[u128]| Record::Delta {
            epoch,
            delta: Delta {
                hour: HourStart::new(hour).expect("an hour"),
                clicks,
                impressions,
                last_offset,
                newest_received_at: Millis(hour + last_offset),
                new_users: users.to_vec(),
            },
        };
    let fence = |owner: &str| Record::Fence {
        owner: owner.into(),
    };
    vec![
        fence("a"),                     // 0: epoch 0
        delta(0, H, 2, 1, 30, &[1, 2]), // 1
        Record::Ids {
            epoch: 0,
            bucket: BUCKET,
            pairs: vec![10, 11],
        }, // 2
        Record::Checkpoint {
            epoch: 0,
            next_offset: 40,
            watermark: Millis(H + 1_000),
            complete_from_hour: Millis::MIN,
        }, // 3
        delta(0, H + HOUR_MS, 1, 0, 41, &[3]), // 4: never checkpointed
        fence("b"),                     // 5: epoch 5
        delta(0, H, 99, 99, 99, &[99]), // 6: zombie of epoch 0
        delta(5, H, 3, 1, 50, &[4]),    // 7
        delta(5, H + HOUR_MS, 1, 2, 55, &[5, u128::MAX]), // 8
        Record::Ids {
            epoch: 5,
            bucket: BUCKET,
            pairs: vec![12],
        }, // 9
        Record::Checkpoint {
            epoch: 5,
            next_offset: 60,
            watermark: Millis(H + HOUR_MS + 5_000),
            complete_from_hour: Millis(H),
        }, // 10
        fence("c"),                     // 11: the restoring owner
    ]
}

/// What the scenario restores to, as text (sorted, so equal states read the same).
fn describe(f: &Fold) -> String {
    let mut s = String::new();
    let checkpoint = f.checkpoint.map(|(next, w)| (next, w.0));
    let _ = writeln!(
        s,
        "checkpoint {checkpoint:?} complete_from_hour {}",
        f.complete_from_hour
    );
    let _ = writeln!(
        s,
        "previous_epoch {} records {} ignored {}",
        f.previous_epoch, f.records, f.ignored
    );
    for (hour, h) in &f.hours {
        let mut users: Vec<u128> = h.users.iter().collect();
        users.sort_unstable();
        let _ = writeln!(
            s,
            "hour {hour} clicks {} impressions {} last_offset {} newest {} users {users:?}",
            h.clicks, h.impressions, h.last_offset, h.newest_received_at
        );
    }
    for (bucket, mut pairs) in f.seen.buckets_for_tests() {
        pairs.sort_unstable();
        let _ = writeln!(s, "ids bucket {bucket} {pairs:?}");
    }
    s
}

const EXPECTED: &str = "\
checkpoint Some((60, 1700002805000)) complete_from_hour 1699999200000
previous_epoch 5 records 12 ignored 1
hour 1699999200000 clicks 3 impressions 1 last_offset 50 newest 1699999200050 users [1, 2, 4]
hour 1700002800000 clicks 1 impressions 2 last_offset 55 newest 1700002800055 users [5, 340282366920938463463374607431768211455]
ids bucket 78703 [10, 11, 12]
";

/// Parses a fixture: one record a line, `<offset> <hex bytes>`.
fn parse(text: &str) -> Vec<(i64, Vec<u8>)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (offset, hex) = l.split_once(' ').expect("offset and bytes");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            (offset.parse().expect("offset"), bytes)
        })
        .collect()
}

fn restore(text: &str) -> Fold {
    let mut fold = Fold::new(RULES);
    for (offset, bytes) in parse(text) {
        let record = Record::decode(&bytes).expect("every record of a fixture decodes");
        fold.apply(offset, bytes.len(), record);
    }
    fold
}

#[test]
fn the_scenario_restores_to_the_expected_state() {
    let mut fold = Fold::new(RULES);
    for (offset, r) in scenario().into_iter().enumerate() {
        let bytes = r.encode();
        fold.apply(
            offset as i64,
            bytes.len(),
            Record::decode(&bytes).expect("round trip"),
        );
    }
    assert_eq!(describe(&fold), EXPECTED);
}

#[test]
fn a_changelog_written_before_records_had_a_version_restores_the_same() {
    let fold = restore(include_str!("../../fixtures/changelog-format-0.hex"));
    assert_eq!(describe(&fold), EXPECTED);
}

/// Writes the scenario in today's encoding to `processor/fixtures/changelog-new.hex`, to be
/// renamed after the format it holds: `cargo test -p processor -- --ignored write_fixture`.
#[test]
#[ignore]
fn write_fixture() {
    let mut text = String::from(
        "# the scenario of processor/src/changelog/fixture.rs: offset, then the record's bytes\n",
    );
    for (offset, r) in scenario().into_iter().enumerate() {
        let hex: String = r.encode().iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(text, "{offset} {hex}");
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/changelog-new.hex");
    std::fs::write(path, text).expect("writing the fixture");
}

#[test]
fn a_changelog_of_format_1_restores_the_same() {
    let fold = restore(include_str!("../../fixtures/changelog-format-1.hex"));
    assert_eq!(describe(&fold), EXPECTED);
}

#[test]
fn a_record_of_an_unknown_format_makes_the_fold_unusable_not_wrong() {
    let mut records = parse(include_str!("../../fixtures/changelog-format-1.hex"));
    records[7].1[0] = 0x80 | (FORMAT + 1);
    let mut fold = Fold::new(RULES);
    for (offset, bytes) in records {
        match Record::decode(&bytes) {
            Ok(r) => fold.apply(offset, bytes.len(), r),
            Err(e) => {
                fold.refuse(offset, e);
                break;
            }
        }
    }
    assert_eq!(
        fold.unreadable,
        Some((7, DecodeError::UnknownFormat(FORMAT + 1)))
    );
}
