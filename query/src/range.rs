//! `GET /analytics?from={ms}&to={ms}`: the hours whose start lies in `[floor_hour(from), to)`,
//! oldest first, every hour present.

use analytics_model::{
    hour::hour_start, hour::HOUR_MS, hour::MAX_TIMESTAMP_MS, query_string::Params,
};

/// Why a range request was refused with `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("'timestamp' cannot be combined with 'from'/'to': ask for one hour or for a range")]
    Mixed,
    #[error("missing query parameter '{0}': a range needs both 'from' and 'to' (milliseconds)")]
    Missing(&'static str),
    #[error("'{0}' given more than once")]
    Repeated(&'static str),
    #[error(
        "'{0}' must be a base-10 integer of milliseconds since the Unix epoch, 0 to year 9999"
    )]
    Invalid(&'static str),
    #[error("'to' must be after 'from'")]
    Empty,
    #[error("the range spans {hours} hours; at most {max} (--max-range-hours)")]
    TooLong { hours: i64, max: u32 },
}

/// A validated range: `hours` consecutive hours from `first_hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first_hour: i64,
    pub hours: usize,
}

impl Range {
    /// The start of every hour of the range, oldest first.
    pub fn hour_starts(&self) -> impl Iterator<Item = i64> {
        let first = self.first_hour;
        (0..self.hours as i64).map(move |i| first + i * HOUR_MS)
    }
}

fn millis(params: &Params<'_>, name: &'static str) -> Result<Option<i64>, RangeError> {
    let mut found = params.iter().filter(|(k, _)| k == name);
    let Some((_, value)) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(RangeError::Repeated(name));
    }
    let value = value.as_deref().unwrap_or("");
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Invalid(name));
    }
    match value.parse::<i64>() {
        Ok(ms) if ms <= MAX_TIMESTAMP_MS => Ok(Some(ms)),
        _ => Err(RangeError::Invalid(name)),
    }
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
    let from = millis(params, "from")?.ok_or(RangeError::Missing("from"))?;
    let to = millis(params, "to")?.ok_or(RangeError::Missing("to"))?;
    if to <= from {
        return Err(RangeError::Empty);
    }
    let first_hour = hour_start(from);
    let hours = (to - first_hour + HOUR_MS - 1) / HOUR_MS;
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
        p(q).unwrap().unwrap().hour_starts().collect()
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
        for bad in [
            "from=abc&to=5",
            "from=-1&to=5",
            "from=1.5&to=5",
            "from=&to=5",
            "from&to=5",
            "from=99999999999999999999&to=5",
            "from=253402300800000&to=253402300800001",
        ] {
            assert_eq!(p(bad), Err(RangeError::Invalid("from")), "{bad}");
        }
        assert_eq!(p("from=1&from=2&to=5"), Err(RangeError::Repeated("from")));
        assert!(RangeError::Mixed.to_string().lines().count() == 1);
    }
}
