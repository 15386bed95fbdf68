use super::*;
use analytics_model::query_string;
use std::time::Duration;

const DAY: i64 = 1_764_979_200_000; // 2025-12-06T00:00:00Z, a Saturday
const NOW: Millis = Millis(DAY + 30 * DAY_MS);

fn limits() -> Limits {
    Limits {
        max_range_hours: 744,
        max_total_days: 400,
        membership: MembershipArgs {
            membership_retention: Duration::from_secs(400 * 86_400),
        },
    }
}

fn total_of(q: &str) -> Result<Total, GroupError> {
    total(&query_string::parse(q).unwrap(), &limits(), NOW)
}

fn rows(q: &str) -> Result<Option<Buckets>, GroupError> {
    buckets(&query_string::parse(q).unwrap(), &limits(), NOW)
}

#[test]
fn a_total_is_the_hours_of_the_range() {
    let t = total_of(&format!("from={}&to={}", DAY + 1, DAY + 2 * DAY_MS)).unwrap();
    assert_eq!((t.start.ms(), t.end.ms()), (DAY, DAY + 2 * DAY_MS));
    let t = total_of(&format!("from={DAY}&to={}&tz=Europe/Paris", DAY + 1)).unwrap();
    assert_eq!(t.end.ms(), DAY + HOUR_MS);
    assert_eq!(t.zone.rfc3339(t.start.start()), "2025-12-06T01:00:00+01:00");
}

#[test]
fn without_interval_or_tz_the_hourly_range_is_unchanged() {
    assert!(rows(&format!("from={DAY}&to={}", DAY + DAY_MS))
        .unwrap()
        .is_none());
}

#[test]
fn days_of_a_zone() {
    let b = rows(&format!(
        "from={DAY}&to={}&interval=day&tz=Europe/Paris",
        DAY + 2 * DAY_MS
    ))
    .unwrap()
    .unwrap();
    // 00:00Z is 01:00 in Paris: the first row is the Paris day of the 6th, from 23:00Z.
    let starts: Vec<String> = b
        .buckets
        .iter()
        .map(|x| b.zone.rfc3339(x.start.start()))
        .collect();
    assert_eq!(
        starts,
        [
            "2025-12-06T00:00:00+01:00",
            "2025-12-07T00:00:00+01:00",
            "2025-12-08T00:00:00+01:00"
        ]
    );
    let week = rows(&format!("from={DAY}&to={}&interval=week", DAY + 1))
        .unwrap()
        .unwrap();
    // The ISO week of Saturday the 6th starts on Monday the 1st.
    assert_eq!(week.buckets[0].start.ms(), DAY - 5 * DAY_MS);
    assert_eq!(week.buckets[0].hours(), 7 * 24);
}

#[test]
fn one_line_refusals() {
    let cases = [
        (
            format!("from={DAY}&to={}&interval=year", DAY + 1),
            "unknown interval 'year'",
        ),
        (
            format!("from={DAY}&to={}&tz=Mars/Olympus", DAY + 1),
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            format!("from={DAY}&to={}&tz=UTC&tz=UTC", DAY + 1),
            "'tz' given more than once",
        ),
        (
            format!("from={DAY}&to={}&interval=day&interval=day", DAY + 1),
            "'interval' given more than once",
        ),
        (
            format!("from={DAY}&to={}&interval=day&tz=Asia/Kolkata", DAY + 1),
            "Asia/Kolkata is at offset +05:30",
        ),
        (
            format!("from={DAY}&to={}&interval=hour", DAY + 745 * HOUR_MS),
            "at most 744 (--max-range-hours)",
        ),
        (
            format!("from={DAY}&to={}&interval=day", DAY + 401 * DAY_MS),
            "spans 401 days; at most 400 (--max-total-days)",
        ),
        // 400 days of whole months reach past 400 days.
        (
            format!("from={}&to={}&interval=month", DAY, DAY + 395 * DAY_MS),
            "at most 400 (--max-total-days)",
        ),
        (
            format!("to={DAY}&interval=day"),
            "missing query parameter 'from'",
        ),
    ];
    for (q, expected) in cases {
        let e = rows(&q).unwrap_err().to_string();
        assert!(e.contains(expected), "{q}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = total_of(&format!("from={DAY}&to={}", DAY + 401 * DAY_MS)).unwrap_err();
    assert!(e.to_string().contains("(--max-total-days)"), "{e}");
    assert!(total_of(&format!("from={DAY}&to={}", DAY + 400 * DAY_MS)).is_ok());
    let e = total_of(&format!("from={DAY}&to={}&tz=Nowhere/Else", DAY + 1)).unwrap_err();
    assert!(e.to_string().contains("unknown time zone"), "{e}");
    assert!(total_of(&format!("to={DAY}")).is_err());
}

#[test]
fn ranges_reaching_past_the_retention_are_refused_naming_it() {
    let old = NOW.0 - 401 * DAY_MS;
    let e = total_of(&format!("from={old}&to={}", old + DAY_MS)).unwrap_err();
    assert!(
        matches!(e, GroupError::PastRetention { days: 400, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("--membership-retention"), "{e}");
    let e = rows(&format!("from={old}&to={}&interval=day", old + DAY_MS)).unwrap_err();
    assert!(matches!(e, GroupError::PastRetention { .. }), "{e}");
    // Hourly rows come from the hour counts, which are kept: not refused.
    assert!(rows(&format!("from={old}&to={}&interval=hour", old + DAY_MS)).is_ok());
    // Within the retention: answered.
    let recent = NOW.0 - 399 * DAY_MS;
    assert!(total_of(&format!("from={recent}&to={}", recent + DAY_MS)).is_ok());
}
