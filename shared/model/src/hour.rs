//! Time and hours. An instant is a [`Millis`] (milliseconds since the Unix epoch, UTC); an
//! hour is identified by the instant of its start, an [`HourStart`]:
//! `floor(ms / 3_600_000) * 3_600_000`. Both ends are handled explicitly: `HH:00:00.000`
//! belongs to the hour it starts, `HH:59:59.999` to the same hour.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 3_600_000;

/// Largest timestamp the API accepts: 9999-12-31T23:59:59.999Z, so every hour formats as RFC 3339.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// An instant: milliseconds since the Unix epoch, UTC (an event's time, a receipt time, a
/// partition's watermark).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    /// Before every instant (an empty partition's watermark).
    pub const MIN: Millis = Millis(i64::MIN);

    /// The hour this instant lies in.
    pub fn hour(self) -> HourStart {
        HourStart::containing(self)
    }

    /// `ms` milliseconds later (earlier when negative), saturating.
    pub fn plus(self, ms: i64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to this instant, saturating.
    pub fn since(self, earlier: Millis) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The start of a UTC hour, as milliseconds since the epoch: always a multiple of
/// [`HOUR_MS`], so an hour read from a record or a store is checked ([`HourStart::new`]).
/// Displayed as its milliseconds (the form of the keys and rows that name an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct HourStart(i64);

/// A number that is not the start of an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not the start of an hour (a multiple of 3 600 000 ms)")]
pub struct NotAnHour(pub i64);

impl HourStart {
    /// The hour containing `t`.
    pub fn containing(t: Millis) -> Self {
        HourStart(hour_start(t.0))
    }

    /// The hour starting at `ms`, which must be a multiple of [`HOUR_MS`].
    pub fn new(ms: i64) -> Result<Self, NotAnHour> {
        if ms.rem_euclid(HOUR_MS) == 0 {
            Ok(HourStart(ms))
        } else {
            Err(NotAnHour(ms))
        }
    }

    /// Milliseconds since the epoch of the hour's start.
    pub const fn ms(self) -> i64 {
        self.0
    }

    /// The instant the hour starts.
    pub fn start(self) -> Millis {
        Millis(self.0)
    }

    /// The instant the hour ends (exclusive): the next hour's start.
    pub fn end(self) -> Millis {
        Millis(hour_end(self.0))
    }

    /// The hour `n` hours later (earlier when negative), saturating at the ends of time.
    pub fn plus_hours(self, n: i64) -> Self {
        HourStart(hour_start(self.0.saturating_add(n.saturating_mul(HOUR_MS))))
    }

    /// Whole hours from `earlier` to this one.
    pub fn hours_since(self, earlier: HourStart) -> i64 {
        self.0.saturating_sub(earlier.0) / HOUR_MS
    }

    /// The hour's start as RFC 3339 UTC, e.g. `2023-11-14T22:00:00Z` ([`format_rfc3339`]).
    pub fn rfc3339(self) -> String {
        format_rfc3339(self.0)
    }
}

impl TryFrom<i64> for HourStart {
    type Error = NotAnHour;
    fn try_from(ms: i64) -> Result<Self, NotAnHour> {
        HourStart::new(ms)
    }
}

impl From<HourStart> for i64 {
    fn from(h: HourStart) -> i64 {
        h.0
    }
}

impl fmt::Display for HourStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

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
    fn hour_starts_are_checked_and_move_by_whole_hours() {
        let h = HourStart::containing(Millis(T));
        assert_eq!(h.ms(), H);
        assert_eq!(HourStart::new(H), Ok(h));
        assert_eq!(HourStart::new(H + 1), Err(NotAnHour(H + 1)));
        assert_eq!(h.end(), Millis(H + HOUR_MS));
        assert_eq!(h.plus_hours(2).ms(), H + 2 * HOUR_MS);
        assert_eq!(h.plus_hours(-1).ms(), H - HOUR_MS);
        assert_eq!(h.plus_hours(3).hours_since(h), 3);
        assert_eq!(h.to_string(), H.to_string());
        assert_eq!(h.rfc3339(), "2023-11-14T22:00:00Z");
        assert_eq!(serde_json::to_string(&h).unwrap(), H.to_string());
        assert_eq!(
            serde_json::from_str::<HourStart>(&H.to_string()).unwrap(),
            h
        );
        assert!(serde_json::from_str::<HourStart>(&T.to_string()).is_err());
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
