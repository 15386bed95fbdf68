//! Hour math. An hour is identified by the millisecond timestamp of its start in UTC:
//! `floor(ms / 3_600_000) * 3_600_000`. Both ends are handled explicitly: `HH:00:00.000`
//! belongs to the hour it starts, `HH:59:59.999` to the same hour.

/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 3_600_000;

/// Largest timestamp the API accepts: 9999-12-31T23:59:59.999Z, so every hour formats as RFC 3339.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Start of the UTC hour containing `ms` (floor division, also for negative values).
pub fn hour_start(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// End (exclusive) of the hour starting at `hour`.
pub fn hour_end(hour: i64) -> i64 {
    hour.saturating_add(HOUR_MS)
}

/// Formats a millisecond timestamp as RFC 3339 UTC with second precision (the `time`
/// crate), e.g. `2023-11-14T22:00:00Z`. Every hour the API accepts formats: years 1970..=9999
/// (see [`MAX_TIMESTAMP_MS`]); outside years 0..=9999, which RFC 3339 cannot write, this
/// panics.
pub fn format_rfc3339(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| panic!("{ms} ms is outside the years RFC 3339 can write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2023-11-14T22:13:20Z = 1_700_000_000_000 ms
    const T: i64 = 1_700_000_000_000;
    const H: i64 = 1_699_999_200_000; // 2023-11-14T22:00:00Z

    #[test]
    fn first_millisecond_belongs_to_its_hour() {
        assert_eq!(hour_start(H), H);
    }

    #[test]
    fn last_millisecond_belongs_to_the_same_hour() {
        assert_eq!(hour_start(H + HOUR_MS - 1), H);
        assert_eq!(hour_start(H + HOUR_MS), H + HOUR_MS);
        assert_eq!(hour_start(H - 1), H - HOUR_MS);
    }

    #[test]
    fn inside_the_hour() {
        assert_eq!(hour_start(T), H);
        assert_eq!(hour_end(H), H + HOUR_MS);
    }

    #[test]
    fn milliseconds_are_not_seconds() {
        // 1_700_000_000 ms is 1970-01-20, not 2023.
        assert_eq!(
            format_rfc3339(hour_start(1_700_000_000)),
            "1970-01-20T16:00:00Z"
        );
    }

    #[test]
    fn negative_and_extreme_values() {
        assert_eq!(hour_start(0), 0);
        assert_eq!(hour_start(-1), -HOUR_MS);
        assert_eq!(hour_start(-HOUR_MS), -HOUR_MS);
        assert_eq!(hour_start(-HOUR_MS - 1), -2 * HOUR_MS);
        assert_eq!(hour_start(MAX_TIMESTAMP_MS), MAX_TIMESTAMP_MS + 1 - HOUR_MS);
        // never overflows, even far outside the accepted range
        assert_eq!(hour_start(i64::MAX) % HOUR_MS, 0);
        assert_eq!(hour_start(i64::MIN + HOUR_MS) % HOUR_MS, 0);
        assert_eq!(hour_end(i64::MAX), i64::MAX);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(format_rfc3339(H), "2023-11-14T22:00:00Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_rfc3339(hour_start(MAX_TIMESTAMP_MS)),
            "9999-12-31T23:00:00Z"
        );
        assert_eq!(format_rfc3339(-HOUR_MS), "1969-12-31T23:00:00Z");
    }
}
