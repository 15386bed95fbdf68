//! Validation of `POST /analytics?timestamp={ms}&user={id}&click|impression`.
//!
//! Accepted kind forms: a bare flag (`&click`, also with an empty value `&click=`),
//! `&click=true` / `&click=1`, and `&event=click`. Exactly one kind per request. An optional
//! `&id=` (1..=128 bytes) makes a retry safe: the pipeline counts a (user, id) once.
//!
//! The field checks ([`check_timestamp`], [`check_user`], [`check_id`]) are shared with the
//! batch endpoint's NDJSON lines ([`crate::batch`]), so both accept exactly the same events.

use analytics_model::event::{Event, EventKind};
use analytics_model::hour::Millis;
use analytics_model::query_string::{self, MillisError, QueryError};

/// Longest user id, in bytes of UTF-8 after percent-decoding.
pub const MAX_USER_BYTES: usize = 256;

/// Longest event id, in bytes of UTF-8 after percent-decoding.
pub const MAX_ID_BYTES: usize = 128;

/// Why a request was refused with `400`. `Display` is the one-line body; [`Rejection::reason`]
/// the metric label, so that editing a message never changes a label.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Malformed(#[from] QueryError),
    #[error(transparent)]
    Timestamp(#[from] MillisError),
    #[error("'timestamp' is more than {0} ms ahead of the server clock")]
    TimestampFuture(i64),
    #[error("'timestamp' is older than the lateness window ({0} ms)")]
    TimestampTooOld(i64),
    #[error("missing query parameter 'user'")]
    UserMissing,
    #[error("'user' given more than once")]
    UserRepeated,
    #[error("'user' must not be empty")]
    UserEmpty,
    #[error("'user' is longer than {MAX_USER_BYTES} bytes")]
    UserTooLong,
    #[error("'user' must not contain control characters")]
    UserControl,
    #[error("'{0}' takes no value, or true/1")]
    FlagValue(String),
    #[error("'event' must be 'click' or 'impression'")]
    EventEmpty,
    #[error("unknown event kind {0:?}: expected 'click' or 'impression'")]
    EventUnknown(String),
    #[error("missing event kind: add '&click' or '&impression'")]
    KindMissing,
    #[error("exactly one event kind per request ('click' or 'impression')")]
    KindRepeated,
    #[error("'id' given more than once")]
    IdRepeated,
    #[error("'id' must be 1 to {MAX_ID_BYTES} bytes")]
    IdLength,
    #[error("'id' must not contain control characters")]
    IdControl,
}

impl Rejection {
    /// The `reason` label of `analytics_events_rejected_total` (a bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::Timestamp(_) => "timestamp_invalid",
            Rejection::TimestampFuture(_) => "timestamp_future",
            Rejection::TimestampTooOld(_) => "timestamp_too_old",
            Rejection::UserMissing
            | Rejection::UserRepeated
            | Rejection::UserEmpty
            | Rejection::UserTooLong
            | Rejection::UserControl => "user_invalid",
            Rejection::FlagValue(_)
            | Rejection::EventEmpty
            | Rejection::EventUnknown(_)
            | Rejection::KindMissing
            | Rejection::KindRepeated => "kind_invalid",
            Rejection::IdRepeated | Rejection::IdLength | Rejection::IdControl => "id_invalid",
        }
    }

    /// Every label [`Rejection::reason`] can return, for registering the series at zero.
    pub const REASONS: &[&str] = &[
        "timestamp_future",
        "timestamp_too_old",
        "timestamp_invalid",
        "user_invalid",
        "kind_invalid",
        "id_invalid",
        "malformed",
    ];
}

/// Bounds on the event time, relative to the server clock at receipt.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub now: Millis,
    pub max_event_age_ms: i64,
    pub max_future_skew_ms: i64,
}

/// Validates the raw query string (without `?`) into the event received at `w.now`.
pub fn validate(raw_query: &str, w: Window) -> Result<Event, Rejection> {
    let params = query_string::parse(raw_query)?;
    let timestamp = check_timestamp(query_string::parse_timestamp(&params)?, w)?;

    let mut users = params.iter().filter(|(k, _)| k == "user");
    let user = match (users.next(), users.next()) {
        (None, _) => return Err(Rejection::UserMissing),
        (Some(_), Some(_)) => return Err(Rejection::UserRepeated),
        (Some((_, v)), None) => check_user(v.as_deref().unwrap_or(""))?,
    };
    let mut ids = params.iter().filter(|(k, _)| k == "id");
    let id = match (ids.next(), ids.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(Rejection::IdRepeated),
        (Some((_, v)), None) => Some(check_id(v.as_deref().unwrap_or(""))?),
    };

    let mut kinds: Vec<EventKind> = Vec::with_capacity(1);
    for (k, v) in &params {
        let flag = |kind: EventKind| -> Result<Option<EventKind>, Rejection> {
            match v.as_deref() {
                None | Some("") | Some("true") | Some("1") => Ok(Some(kind)),
                Some("false") | Some("0") => Ok(None),
                Some(_) => Err(Rejection::FlagValue(k.to_string())),
            }
        };
        let found = match (k.as_ref(), EventKind::parse(k)) {
            (_, Some(kind)) => flag(kind)?,
            ("event", None) => match v.as_deref().unwrap_or("") {
                "" => return Err(Rejection::EventEmpty),
                name => Some(
                    EventKind::parse(name)
                        .ok_or_else(|| Rejection::EventUnknown(name.to_owned()))?,
                ),
            },
            _ => None,
        };
        kinds.extend(found);
    }
    let kind = match kinds.as_slice() {
        [] => return Err(Rejection::KindMissing),
        [k] => *k,
        _ => return Err(Rejection::KindRepeated),
    };
    Ok(Event {
        timestamp,
        user: user.to_owned(),
        kind,
        received_at: w.now,
        id: id.map(str::to_owned),
    })
}

/// The event time, if inside the window.
pub fn check_timestamp(timestamp: Millis, w: Window) -> Result<Millis, Rejection> {
    if timestamp > w.now.plus(w.max_future_skew_ms) {
        return Err(Rejection::TimestampFuture(w.max_future_skew_ms));
    }
    if timestamp < w.now.plus(-w.max_event_age_ms) {
        return Err(Rejection::TimestampTooOld(w.max_event_age_ms));
    }
    Ok(timestamp)
}

/// The user id, if 1..=256 bytes without control characters.
pub fn check_user(user: &str) -> Result<&str, Rejection> {
    if user.is_empty() {
        return Err(Rejection::UserEmpty);
    }
    if user.len() > MAX_USER_BYTES {
        return Err(Rejection::UserTooLong);
    }
    if user.chars().any(char::is_control) {
        return Err(Rejection::UserControl);
    }
    Ok(user)
}

/// The event id, if 1..=128 bytes without control characters.
pub fn check_id(id: &str) -> Result<&str, Rejection> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(Rejection::IdLength);
    }
    if id.chars().any(char::is_control) {
        return Err(Rejection::IdControl);
    }
    Ok(id)
}

/// The clock and window of the unit tests: now is `TEST_NOW`, a day back, five minutes ahead.
#[cfg(test)]
pub(crate) const TEST_NOW: i64 = 1_700_000_000_000;
#[cfg(test)]
pub(crate) const TEST_WINDOW: Window = Window {
    now: Millis(TEST_NOW),
    max_event_age_ms: 24 * 3_600_000,
    max_future_skew_ms: 300_000,
};

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = TEST_NOW;
    const W: Window = TEST_WINDOW;

    fn ok(q: &str) -> Event {
        validate(q, W).unwrap_or_else(|e| panic!("{q}: {e}"))
    }
    fn err(q: &str) -> String {
        validate(q, W).expect_err(q).to_string()
    }
    fn reason(q: &str) -> &'static str {
        validate(q, W).expect_err(q).reason()
    }

    #[test]
    fn accepts_every_kind_form() {
        for (q, kind) in [
            ("timestamp=1700000000000&user=alice&click", EventKind::Click),
            (
                "timestamp=1700000000000&user=alice&impression",
                EventKind::Impression,
            ),
            (
                "timestamp=1700000000000&user=alice&click=",
                EventKind::Click,
            ),
            (
                "timestamp=1700000000000&user=alice&click=true",
                EventKind::Click,
            ),
            (
                "timestamp=1700000000000&user=alice&impression=1",
                EventKind::Impression,
            ),
            (
                "timestamp=1700000000000&user=alice&event=click",
                EventKind::Click,
            ),
            (
                "timestamp=1700000000000&user=alice&event=impression",
                EventKind::Impression,
            ),
            ("click&user=alice&timestamp=1700000000000", EventKind::Click),
            (
                "timestamp=1700000000000&user=alice&click&impression=false",
                EventKind::Click,
            ),
        ] {
            let v = ok(q);
            assert_eq!(v.kind, kind, "{q}");
            assert_eq!(v.user, "alice");
            assert_eq!(v.timestamp, Millis(NOW));
        }
    }

    #[test]
    fn user_ids_are_strings_kept_whole() {
        assert_eq!(ok("timestamp=1700000000000&user=007&click").user, "007");
        assert_eq!(
            ok("timestamp=1700000000000&user=a%2Bb+c&click").user,
            "a+b c"
        );
        assert_eq!(ok("timestamp=1700000000000&user=%E2%9C%93&click").user, "✓");
        let long = "x".repeat(MAX_USER_BYTES);
        assert_eq!(
            ok(&format!("timestamp=1700000000000&user={long}&click")).user,
            long
        );
        // 128 two-byte characters = 256 bytes: accepted
        let u = "%C3%BC".repeat(128);
        assert_eq!(
            ok(&format!("timestamp=1700000000000&user={u}&click"))
                .user
                .len(),
            256
        );
    }

    #[test]
    fn rejects_bad_users() {
        assert!(err("timestamp=1700000000000&click").contains("missing"));
        assert!(err("timestamp=1700000000000&user=&click").contains("empty"));
        assert!(err("timestamp=1700000000000&user&click").contains("empty"));
        let long = "x".repeat(MAX_USER_BYTES + 1);
        assert!(err(&format!("timestamp=1700000000000&user={long}&click")).contains("longer"));
        assert!(err("timestamp=1700000000000&user=a%0Ab&click").contains("control"));
        assert!(err("timestamp=1700000000000&user=a%00&click").contains("control"));
        assert!(err("timestamp=1700000000000&user=%ff&click").contains("UTF-8"));
        assert!(err("timestamp=1700000000000&user=%g1&click").contains("percent"));
        assert!(err("timestamp=1700000000000&user=a&user=b&click").contains("more than once"));
    }

    #[test]
    fn rejects_bad_kinds() {
        assert!(err("timestamp=1700000000000&user=a").contains("missing event kind"));
        assert!(err("timestamp=1700000000000&user=a&click&impression").contains("exactly one"));
        assert!(err("timestamp=1700000000000&user=a&click&click").contains("exactly one"));
        assert!(err("timestamp=1700000000000&user=a&click&event=click").contains("exactly one"));
        assert!(err("timestamp=1700000000000&user=a&event=view").contains("unknown event kind"));
        assert!(err("timestamp=1700000000000&user=a&event=").contains("'event' must be"));
        assert!(err("timestamp=1700000000000&user=a&click=yes").contains("takes no value"));
        assert!(err("timestamp=1700000000000&user=a&click=false").contains("missing event kind"));
        assert!(err("timestamp=1700000000000&user=a&view").contains("missing event kind"));
    }

    #[test]
    fn ids_are_optional_bounded_and_single() {
        assert_eq!(ok("timestamp=1700000000000&user=a&click").id, None);
        assert_eq!(
            ok("timestamp=1700000000000&user=a&click&id=r%2D1%20x").id,
            Some("r-1 x".into())
        );
        let long = "i".repeat(MAX_ID_BYTES);
        assert_eq!(
            ok(&format!("timestamp=1700000000000&user=a&click&id={long}")).id,
            Some(long.clone())
        );
        for (q, words) in [
            (
                format!("timestamp=1700000000000&user=a&click&id={long}i"),
                "1 to 128",
            ),
            (
                "timestamp=1700000000000&user=a&click&id=".into(),
                "1 to 128",
            ),
            ("timestamp=1700000000000&user=a&click&id".into(), "1 to 128"),
            (
                "timestamp=1700000000000&user=a&click&id=a%09b".into(),
                "control",
            ),
            (
                "timestamp=1700000000000&user=a&click&id=1&id=2".into(),
                "more than once",
            ),
        ] {
            assert!(err(&q).contains(words), "{q}: {}", err(&q));
            assert_eq!(reason(&q), "id_invalid", "{q}");
        }
    }

    #[test]
    fn rejects_bad_timestamps() {
        assert!(err("user=a&click").contains("missing query parameter 'timestamp'"));
        assert!(err("timestamp=abc&user=a&click").contains("base-10 integer"));
        assert!(err("timestamp=-1&user=a&click").contains("negative"));
        assert!(err("timestamp=1.7e12&user=a&click").contains("base-10 integer"));
    }

    #[test]
    fn lateness_window_and_future_skew_bounds_are_inclusive() {
        let at = |ts: i64| validate(&format!("timestamp={ts}&user=a&click"), W);
        assert!(at(NOW + 300_000).is_ok());
        assert!(at(NOW + 300_001).unwrap_err().to_string().contains("ahead"));
        assert!(at(NOW - 24 * 3_600_000).is_ok());
        assert!(at(NOW - 24 * 3_600_000 - 1)
            .unwrap_err()
            .to_string()
            .contains("older"));
        // Seconds sent instead of milliseconds are far in the past: rejected, not mis-bucketed.
        assert!(at(NOW / 1000).unwrap_err().to_string().contains("older"));
    }

    #[test]
    fn every_rejection_has_its_label() {
        for (q, label) in [
            ("timestamp=1700000300001&user=a&click", "timestamp_future"),
            ("timestamp=1&user=a&click", "timestamp_too_old"),
            ("timestamp=abc&user=a&click", "timestamp_invalid"),
            ("user=a&click", "timestamp_invalid"),
            ("timestamp=1700000000000&click", "user_invalid"),
            ("timestamp=1700000000000&user=&click", "user_invalid"),
            (
                "timestamp=1700000000000&user=a&user=b&click",
                "user_invalid",
            ),
            ("timestamp=1700000000000&user=a%00&click", "user_invalid"),
            ("timestamp=1700000000000&user=a", "kind_invalid"),
            ("timestamp=1700000000000&user=a&event=view", "kind_invalid"),
            ("timestamp=1700000000000&user=a&click=yes", "kind_invalid"),
            (
                "timestamp=1700000000000&user=a&click&impression",
                "kind_invalid",
            ),
            // A broken escape is malformed whichever parameter holds it.
            ("timestamp=1700000000000&user=%g1&click", "malformed"),
            ("timestamp=1700000000000&user=%ff&click", "malformed"),
            ("timestamp=%g1&user=a&click", "malformed"),
        ] {
            let got = reason(q);
            assert_eq!(got, label, "{q}");
            assert!(Rejection::REASONS.contains(&got));
        }
    }
}
