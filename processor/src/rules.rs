//! The event-time rules shared by every partition, judged by the partition's watermark (the
//! largest record timestamp seen), never by a clock: see [`crate::state`] and [`crate::seen`].

use analytics_model::hour::{HourStart, Millis};

/// The event-time rules shared by every partition.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_event_age_ms: i64,
    pub max_future_skew_ms: i64,
    /// How long a (user, id) pair is remembered ([`crate::seen`]).
    pub dedup: crate::seen::Window,
}

impl Rules {
    /// The rules for a lateness window, a future skew and a dedup window (all in ms).
    pub const fn new(max_event_age_ms: i64, max_future_skew_ms: i64, dedup_window_ms: i64) -> Self {
        Self {
            max_event_age_ms,
            max_future_skew_ms,
            dedup: crate::seen::Window::new(dedup_window_ms),
        }
    }

    /// True when no more events may be counted for `hour` at watermark `w`.
    pub fn closed(&self, hour: HourStart, w: Millis) -> bool {
        hour.end()
            .plus(self.max_event_age_ms)
            .plus(self.max_future_skew_ms)
            <= w
    }
}
