//! `GET /analytics?from={ms}&to={ms}`: the hours whose start lies in `[floor_hour(from), to)`,
//! oldest first, every hour present.

use analytics_model::hour::{HourStart, Millis, HOUR_MS};
use analytics_model::query_string::{millis_param, MillisError, Params};

/// Why a range request was refused with `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("'timestamp' cannot be combined with 'from'/'to': ask for one hour or for a range")]
    Mixed,
    #[error("missing query parameter '{0}': a range needs both 'from' and 'to' (milliseconds)")]
    Missing(&'static str),
    #[error(transparent)]
    Bound(#[from] MillisError),
    #[error("'to' must be after 'from'")]
    Empty,
    #[error("the range spans {hours} hours; at most {max} (--max-range-hours)")]
    TooLong { hours: i64, max: u32 },
}

/// A validated range: `hours` consecutive hours from `first_hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first_hour: HourStart,
    pub hours: usize,
}

impl Range {
    /// The start of every hour of the range, oldest first.
    pub fn hour_starts(&self) -> impl Iterator<Item = HourStart> {
        let first = self.first_hour;
        (0..self.hours as i64).map(move |i| first.plus_hours(i))
    }
}

/// A bound that must be given ([`millis_param`], the parser of `timestamp` too).
fn bound(params: &Params<'_>, name: &'static str) -> Result<Millis, RangeError> {
    millis_param(params, name)?.ok_or(RangeError::Missing(name))
}

/// The range asked for, or `None` when the request names neither `from` nor `to` (a
/// single-hour request).
pub fn parse(params: &Params<'_>, max_hours: u32) -> Result<Option<Range>, RangeError> {
    let has = |name: &str| params.iter().any(|(k, _)| k == name);
    if !has("from") && !has("to") {
        return Ok(None);
    }
    if has("timestamp") {
        return Err(RangeError::Mixed);
    }
    let from = bound(params, "from")?;
    let to = bound(params, "to")?;
    if to <= from {
        return Err(RangeError::Empty);
    }
    let first_hour = from.hour();
    let hours = (to.since(first_hour.start()) + HOUR_MS - 1) / HOUR_MS;
    if hours > i64::from(max_hours) {
        return Err(RangeError::TooLong {
            hours,
            max: max_hours,
        });
    }
    Ok(Some(Range {
        first_hour,
        hours: hours as usize,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use analytics_model::query_string;

    const H: i64 = 1_763_798_400_000; // 2025-11-22T08:00:00Z

    fn p(q: &str) -> Result<Option<Range>, RangeError> {
        parse(&query_string::parse(q).unwrap(), 744)
    }

    fn hours(q: &str) -> Vec<i64> {
        p(q).unwrap()
            .unwrap()
            .hour_starts()
            .map(HourStart::ms)
            .collect()
    }

    #[test]
    fn hours_whose_start_lies_in_the_range() {
        assert_eq!(hours(&format!("from={H}&to={}", H + 1)), [H]);
        assert_eq!(hours(&format!("from={H}&to={}", H + HOUR_MS)), [H]);
        assert_eq!(
            hours(&format!("from={H}&to={}", H + HOUR_MS + 1)),
            [H, H + HOUR_MS]
        );
        // `from` inside an hour starts at that hour; `to` inside an hour includes it.
        assert_eq!(
            hours(&format!("from={}&to={}", H + 1_800_000, H + HOUR_MS + 5)),
            [H, H + HOUR_MS]
        );
        assert_eq!(
            hours(&format!("from={}&to={}", H + 1_800_000, H + 1_900_000)),
            [H]
        );
        // Across a day.
        let day = hours(&format!(
            "from={}&to={}",
            H - 12 * HOUR_MS,
            H + 12 * HOUR_MS
        ));
        assert_eq!(day.len(), 24);
        assert_eq!(day[0], H - 12 * HOUR_MS);
        assert!(day.windows(2).all(|w| w[1] - w[0] == HOUR_MS));
        assert_eq!(p("timestamp=5"), Ok(None));
        assert_eq!(p(""), Ok(None));
    }

    #[test]
    fn the_maximum_is_inclusive() {
        assert_eq!(
            hours(&format!("from={H}&to={}", H + 744 * HOUR_MS)).len(),
            744
        );
        assert_eq!(
            p(&format!("from={H}&to={}", H + 744 * HOUR_MS + 1)),
            Err(RangeError::TooLong {
                hours: 745,
                max: 744
            })
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(p(&format!("from={H}")), Err(RangeError::Missing("to")));
        assert_eq!(p(&format!("to={H}")), Err(RangeError::Missing("from")));
        assert_eq!(p(&format!("from={H}&to={H}")), Err(RangeError::Empty));
        assert_eq!(p(&format!("from={H}&to={}", H - 1)), Err(RangeError::Empty));
        assert_eq!(
            p(&format!("timestamp={H}&from={H}&to={}", H + 1)),
            Err(RangeError::Mixed)
        );
        let bad = |e| Err(RangeError::Bound(e));
        for (q, e) in [
            ("from=abc&to=5", MillisError::NotAnInteger("from")),
            ("from=-1&to=5", MillisError::Negative("from")),
            ("from=1.5&to=5", MillisError::NotAnInteger("from")),
            ("from=&to=5", MillisError::Missing("from")),
            ("from&to=5", MillisError::Missing("from")),
            (
                "from=99999999999999999999&to=5",
                MillisError::TooLarge("from"),
            ),
            (
                "from=253402300800000&to=253402300800001",
                MillisError::TooLarge("from"),
            ),
            ("from=1&to=x", MillisError::NotAnInteger("to")),
        ] {
            assert_eq!(p(q), bad(e), "{q}");
        }
        assert_eq!(p("from=1&from=2&to=5"), bad(MillisError::Repeated("from")));
        assert!(RangeError::Mixed.to_string().lines().count() == 1);
    }
}
