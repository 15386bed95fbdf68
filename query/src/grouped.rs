//! What `GET /analytics/total` and `GET /analytics?from&to&interval&tz` ask for: a total
//! over the hours whose start lies in `[floor_hour(from), to)`, or one row per calendar
//! bucket of a zone ([`crate::calendar`]), checked against the limits
//! (`--max-range-hours` for hourly rows, `--max-total-days` and `--membership-retention`
//! for the rest). Every refusal is one line, answered `400`.

use crate::calendar::{self, Bucket, CalendarError, Interval, Zone};
use crate::range::{self, RangeError};
use analytics_model::hour::{HourStart, Millis, HOUR_MS};
use analytics_model::query_string::Params;
use analytics_store::membership::{MembershipArgs, DAY_MS};

/// The limits a grouped request is checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `--max-range-hours`: hourly rows.
    pub max_range_hours: u32,
    /// `--max-total-days`: a total, or day/week/month rows.
    pub max_total_days: u32,
    pub membership: MembershipArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error("query parameter '{0}' given more than once")]
    Repeated(&'static str),
    #[error("the range spans {days} days; at most {max} (--max-total-days)")]
    TooManyDays { days: i64, max: u32 },
    #[error("the range starts at {start}, before {horizon}: the users of each hour are kept for {days} days (--membership-retention), so unique users over it cannot be exact")]
    PastRetention {
        start: String,
        horizon: String,
        days: u64,
    },
}

/// `/analytics/total`: the hours `[start, end)`.
#[derive(Debug, Clone)]
pub struct Total {
    pub zone: Zone,
    pub start: HourStart,
    pub end: HourStart,
}

/// Rows of a zone's calendar.
#[derive(Debug, Clone)]
pub struct Buckets {
    pub zone: Zone,
    pub interval: Interval,
    pub buckets: Vec<Bucket>,
}

/// A parameter given at most once.
fn single<'a>(params: &'a Params<'_>, name: &'static str) -> Result<Option<&'a str>, GroupError> {
    let mut found = params.iter().filter(|(k, _)| k == name);
    let value = found.next().map(|(_, v)| v.as_deref().unwrap_or(""));
    if found.next().is_some() {
        return Err(GroupError::Repeated(name));
    }
    Ok(value)
}

fn zone(params: &Params<'_>) -> Result<Zone, GroupError> {
    Ok(match single(params, "tz")? {
        None => Zone::utc(),
        Some(name) => Zone::parse(name)?,
    })
}

/// `/analytics/total?from&to[&tz]`.
pub fn total(params: &Params<'_>, limits: &Limits, now: Millis) -> Result<Total, GroupError> {
    let zone = zone(params)?;
    let hours_max = limits.max_total_days.saturating_mul(24);
    let range = match range::parse(params, u32::MAX)? {
        Some(range) => range,
        None => return Err(RangeError::Missing("from").into()),
    };
    if range.hours > hours_max as usize {
        return Err(too_many_days(range.hours as i64, limits));
    }
    let start = range.first_hour;
    within_retention(start, &zone, limits, now)?;
    let end = start.plus_hours(range.hours as i64);
    Ok(Total { zone, start, end })
}

/// The rows `interval` and `tz` ask for on `/analytics?from&to`, or `None` when neither
/// is given (the hourly range as before).
pub fn buckets(
    params: &Params<'_>,
    limits: &Limits,
    now: Millis,
) -> Result<Option<Buckets>, GroupError> {
    let interval = single(params, "interval")?;
    let has_tz = single(params, "tz")?.is_some();
    if interval.is_none() && !has_tz {
        return Ok(None);
    }
    let interval = interval.map_or(Ok(Interval::Hour), Interval::parse)?;
    let zone = zone(params)?;
    // The bounds as for hourly ranges; the length against the limit of the rows asked.
    let Some(range) = range::parse(params, u32::MAX)? else {
        return Err(RangeError::Missing("from").into());
    };
    let hourly = interval == Interval::Hour;
    let max_hours = match hourly {
        true => limits.max_range_hours,
        false => limits.max_total_days.saturating_mul(24),
    };
    if range.hours > max_hours as usize {
        return Err(match hourly {
            true => RangeError::TooLong {
                hours: range.hours as i64,
                max: max_hours,
            }
            .into(),
            false => too_many_days(range.hours as i64, limits),
        });
    }
    let from = range.first_hour.start();
    let to = range.first_hour.plus_hours(range.hours as i64).start();
    let buckets = calendar::buckets(&zone, interval, from, to)?;
    if !hourly {
        // Whole buckets: the first may start before `from`, the last end after `to`.
        let spanned = buckets.last().expect("one bucket at least").end;
        let hours = spanned.hours_since(buckets[0].start);
        if hours > i64::from(max_hours) {
            return Err(too_many_days(hours, limits));
        }
        within_retention(buckets[0].start, &zone, limits, now)?;
    }
    Ok(Some(Buckets {
        zone,
        interval,
        buckets,
    }))
}

fn too_many_days(hours: i64, limits: &Limits) -> GroupError {
    GroupError::TooManyDays {
        days: (hours * HOUR_MS + DAY_MS - 1) / DAY_MS,
        max: limits.max_total_days,
    }
}

/// Refuses a start whose membership may have been deleted already.
fn within_retention(
    start: HourStart,
    zone: &Zone,
    limits: &Limits,
    now: Millis,
) -> Result<(), GroupError> {
    let horizon = limits.membership.horizon(now);
    if start.start() >= horizon {
        return Ok(());
    }
    Err(GroupError::PastRetention {
        start: zone.rfc3339(start.start()),
        horizon: zone.rfc3339(horizon),
        days: limits.membership.membership_retention.as_secs() / 86_400,
    })
}

#[cfg(test)]
mod tests;
