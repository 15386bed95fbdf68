//! The event-time window (`--max-event-age`, `--max-future-skew`): how late and how early an
//! event may be, read by the command (to validate) and the processor (to keep state).

use crate::duration::parse_duration;
use clap::Args;
use std::time::Duration;

/// Longest lateness window the pipeline supports.
pub const MAX_EVENT_AGE_LIMIT: Duration = Duration::from_secs(30 * 86_400);

fn parse_event_age(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_EVENT_AGE_LIMIT {
        return Err("--max-event-age may be at most 30d".into());
    }
    if d < Duration::from_secs(3600) {
        return Err("--max-event-age must be at least 1h".into());
    }
    Ok(d)
}

/// The event-time window, read by command (to validate) and processor (to keep state).
/// Both must be given the same values.
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// Oldest event accepted, relative to the time it is received (lateness window, at most 30d).
    #[arg(long, env = "MAX_EVENT_AGE", default_value = "24h", value_parser = parse_event_age)]
    pub max_event_age: Duration,
    /// How far an event timestamp may be ahead of the receiving server's clock.
    #[arg(long, env = "MAX_FUTURE_SKEW", default_value = "5m", value_parser = parse_duration)]
    pub max_future_skew: Duration,
}

impl WindowArgs {
    pub fn max_event_age_ms(&self) -> i64 {
        self.max_event_age.as_millis() as i64
    }
    pub fn max_future_skew_ms(&self) -> i64 {
        self.max_future_skew.as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_age_is_bounded() {
        assert!(parse_event_age("30d").is_ok());
        assert!(parse_event_age("31d").is_err());
        assert!(parse_event_age("30m").is_err());
    }
}
