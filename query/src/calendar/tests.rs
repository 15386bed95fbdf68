use super::*;

fn at(rfc3339: &str) -> Millis {
    Millis(
        rfc3339
            .parse::<Timestamp>()
            .expect("a valid RFC 3339 instant")
            .as_millisecond(),
    )
}

fn zone(name: &str) -> Zone {
    Zone::parse(name).expect("a known zone")
}

/// Each bucket as (its start in the zone, its length in hours).
fn rows(zone_name: &str, interval: Interval, from: &str, to: &str) -> Vec<(String, i64)> {
    let zone = zone(zone_name);
    buckets(&zone, interval, at(from), at(to))
        .expect("buckets")
        .iter()
        .map(|b| (zone.rfc3339(b.start.start()), b.hours()))
        .collect()
}

#[test]
fn intervals_are_parsed_by_name_only() {
    for interval in Interval::ALL {
        assert_eq!(Interval::parse(interval.as_str()), Ok(interval));
    }
    for bad in ["", "days", "Day", "year", "1h"] {
        assert_eq!(
            Interval::parse(bad),
            Err(CalendarError::UnknownInterval(bad.to_string()))
        );
    }
}

#[test]
fn unknown_or_path_like_zones_are_refused() {
    for bad in [
        "",
        "Mars/Olympus_Mons",
        "../../etc/passwd",
        "/usr/share/zoneinfo/UTC",
        "Europe/Paris\n",
        "EST5EDT,M3.2.0,M11.1.0",
    ] {
        let err = Zone::parse(bad).expect_err(bad);
        assert_eq!(err, CalendarError::UnknownZone(bad.to_string()));
        assert!(err.to_string().contains("IANA"), "{err}");
    }
    for good in [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Asia/Tokyo",
        "Etc/GMT+5",
    ] {
        assert_eq!(zone(good).name(), good);
    }
}

#[test]
fn a_day_in_paris_is_the_utc_hours_from_23_00_the_day_before() {
    let zone = zone("Europe/Paris");
    let days = buckets(
        &zone,
        Interval::Day,
        at("2026-12-06T10:00:00Z"),
        at("2026-12-07T12:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        days,
        vec![
            Bucket {
                start: at("2026-12-05T23:00:00Z").hour(),
                end: at("2026-12-06T23:00:00Z").hour(),
            },
            Bucket {
                start: at("2026-12-06T23:00:00Z").hour(),
                end: at("2026-12-07T23:00:00Z").hour(),
            },
        ]
    );
    assert_eq!(
        zone.rfc3339(days[0].start.start()),
        "2026-12-06T00:00:00+01:00"
    );
}

#[test]
fn buckets_start_in_floor_bucket_from_to_to() {
    // `to` at a bucket's start leaves that bucket out; `from` late in a day keeps its day.
    assert_eq!(
        rows(
            "UTC",
            Interval::Day,
            "2026-12-06T23:59:59Z",
            "2026-12-08T00:00:00Z"
        ),
        vec![
            ("2026-12-06T00:00:00+00:00".to_string(), 24),
            ("2026-12-07T00:00:00+00:00".to_string(), 24),
        ]
    );
    assert_eq!(
        rows(
            "UTC",
            Interval::Day,
            "2026-12-06T00:00:00Z",
            "2026-12-06T00:00:00.001Z"
        ),
        vec![("2026-12-06T00:00:00+00:00".to_string(), 24)]
    );
}

#[test]
fn days_with_a_daylight_saving_change_have_23_or_25_hours() {
    assert_eq!(
        rows(
            "Europe/Paris",
            Interval::Day,
            "2026-03-28T12:00:00Z",
            "2026-03-30T12:00:00Z"
        ),
        vec![
            ("2026-03-28T00:00:00+01:00".to_string(), 24),
            ("2026-03-29T00:00:00+01:00".to_string(), 23),
            ("2026-03-30T00:00:00+02:00".to_string(), 24),
        ]
    );
    assert_eq!(
        rows(
            "America/New_York",
            Interval::Day,
            "2026-11-01T12:00:00Z",
            "2026-11-02T12:00:00Z"
        ),
        vec![
            ("2026-11-01T00:00:00-04:00".to_string(), 25),
            ("2026-11-02T00:00:00-05:00".to_string(), 24),
        ]
    );
}

#[test]
fn a_day_whose_midnight_does_not_exist_starts_at_its_first_hour() {
    // Chile moved its clocks from 00:00 to 01:00 on 2026-09-06.
    let days = rows(
        "America/Santiago",
        Interval::Day,
        "2026-09-05T12:00:00Z",
        "2026-09-07T12:00:00Z",
    );
    assert_eq!(days[1], ("2026-09-06T01:00:00-03:00".to_string(), 23));
    assert_eq!(days.iter().map(|d| d.1).sum::<i64>(), 24 + 23 + 24);
}

#[test]
fn weeks_start_on_monday() {
    // 2026-12-06 is a Sunday: its week began on Monday 2026-11-30.
    assert_eq!(
        rows(
            "UTC",
            Interval::Week,
            "2026-12-06T12:00:00Z",
            "2026-12-08T00:00:00Z"
        ),
        vec![
            ("2026-11-30T00:00:00+00:00".to_string(), 168),
            ("2026-12-07T00:00:00+00:00".to_string(), 168),
        ]
    );
    let tokyo = rows(
        "Asia/Tokyo",
        Interval::Week,
        "2026-12-06T16:00:00Z",
        "2026-12-07T00:00:00Z",
    );
    assert_eq!(tokyo, vec![("2026-12-07T00:00:00+09:00".to_string(), 168)]);
}

#[test]
fn months_follow_the_calendar_and_the_zone() {
    assert_eq!(
        rows(
            "America/New_York",
            Interval::Month,
            "2026-10-15T00:00:00Z",
            "2026-12-01T00:00:00Z"
        ),
        vec![
            ("2026-10-01T00:00:00-04:00".to_string(), 31 * 24),
            ("2026-11-01T00:00:00-04:00".to_string(), 30 * 24 + 1),
        ]
    );
    assert_eq!(
        rows(
            "UTC",
            Interval::Month,
            "2028-02-10T00:00:00Z",
            "2028-02-11T00:00:00Z"
        ),
        vec![("2028-02-01T00:00:00+00:00".to_string(), 29 * 24)]
    );
}

#[test]
fn hours_are_utc_hours_shown_in_the_zone() {
    assert_eq!(
        rows(
            "Europe/Paris",
            Interval::Hour,
            "2026-12-06T10:30:00Z",
            "2026-12-06T12:00:00Z"
        ),
        vec![
            ("2026-12-06T11:00:00+01:00".to_string(), 1),
            ("2026-12-06T12:00:00+01:00".to_string(), 1),
        ]
    );
}

#[test]
fn zones_off_the_whole_hour_are_refused_with_their_offset() {
    let refused = |name: &str, from: &str, to: &str| {
        buckets(&zone(name), Interval::Day, at(from), at(to)).expect_err(name)
    };
    let kolkata = refused(
        "Asia/Kolkata",
        "2026-12-06T00:00:00Z",
        "2026-12-07T00:00:00Z",
    );
    assert!(matches!(&kolkata, CalendarError::NotWholeHours { offset, .. } if offset == "+05:30"));
    let message = kolkata.to_string();
    assert!(
        message.contains("Asia/Kolkata") && message.contains("+05:30"),
        "{message}"
    );
    let kathmandu = refused(
        "Asia/Kathmandu",
        "2026-12-06T00:00:00Z",
        "2026-12-07T00:00:00Z",
    );
    assert!(kathmandu.to_string().contains("+05:45"), "{kathmandu}");
    // Adelaide is +10:30 in its summer and +09:30 in its winter: both refused.
    let summer = refused(
        "Australia/Adelaide",
        "2026-12-06T00:00:00Z",
        "2026-12-07T00:00:00Z",
    );
    assert!(summer.to_string().contains("+10:30"), "{summer}");
    let winter = refused(
        "Australia/Adelaide",
        "2026-07-06T00:00:00Z",
        "2026-07-07T00:00:00Z",
    );
    assert!(winter.to_string().contains("+09:30"), "{winter}");
}

#[test]
fn a_change_to_a_fractional_offset_inside_the_range_is_refused() {
    // Lord Howe Island moves by half an hour: +10:30 in winter, +11:00 in summer. A range
    // that starts in summer (whole hours) reaches the change to +10:30 in April 2026.
    let err = buckets(
        &zone("Australia/Lord_Howe"),
        Interval::Month,
        at("2026-03-10T00:00:00Z"),
        at("2026-04-20T00:00:00Z"),
    )
    .expect_err("Lord Howe");
    assert!(err.to_string().contains("+10:30"), "{err}");
}
