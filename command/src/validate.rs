//! Validation of `POST /analytics?timestamp={ms}&user={id}&click|impression`.
//!
//! Accepted kind forms: a bare flag (`&click`, also with an empty value `&click=`),
//! `&click=true` / `&click=1`, and `&event=click`. Exactly one kind per request.

use shared::event::EventKind;
use shared::query_string::{self, TimestampError};

/// Longest user id, in bytes of UTF-8 after percent-decoding.
pub const MAX_USER_BYTES: usize = 256;

/// A validated request, before it becomes an [`shared::event::Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    pub timestamp: i64,
    pub user: String,
    pub kind: EventKind,
}

/// Bounds on the event time, relative to the server clock at receipt.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub now_ms: i64,
    pub max_event_age_ms: i64,
    pub max_future_skew_ms: i64,
}

/// Validates the raw query string (without `?`). The error is the one-line reason for a 400.
pub fn validate(raw_query: &str, w: Window) -> Result<Valid, String> {
    let params = query_string::parse(raw_query).map_err(|e| e.to_string())?;
    let timestamp =
        query_string::parse_timestamp(&params).map_err(|e: TimestampError| e.to_string())?;
    if timestamp > w.now_ms.saturating_add(w.max_future_skew_ms) {
        return Err(format!(
            "'timestamp' is more than {} ms ahead of the server clock",
            w.max_future_skew_ms
        ));
    }
    if timestamp < w.now_ms.saturating_sub(w.max_event_age_ms) {
        return Err(format!(
            "'timestamp' is older than the lateness window ({} ms)",
            w.max_event_age_ms
        ));
    }

    let mut users = params.iter().filter(|(k, _)| k == "user");
    let user = match (users.next(), users.next()) {
        (None, _) => return Err("missing query parameter 'user'".into()),
        (Some(_), Some(_)) => return Err("'user' given more than once".into()),
        (Some((_, v)), None) => v.as_deref().unwrap_or(""),
    };
    if user.is_empty() {
        return Err("'user' must not be empty".into());
    }
    if user.len() > MAX_USER_BYTES {
        return Err(format!("'user' is longer than {MAX_USER_BYTES} bytes"));
    }
    if user.chars().any(char::is_control) {
        return Err("'user' must not contain control characters".into());
    }

    let mut kinds: Vec<EventKind> = Vec::with_capacity(1);
    for (k, v) in &params {
        let flag = |kind: EventKind| -> Result<Option<EventKind>, String> {
            match v.as_deref() {
                None | Some("") | Some("true") | Some("1") => Ok(Some(kind)),
                Some("false") | Some("0") => Ok(None),
                Some(_) => Err(format!("'{k}' takes no value, or true/1")),
            }
        };
        let found = match k.as_str() {
            "click" => flag(EventKind::Click)?,
            "impression" => flag(EventKind::Impression)?,
            "event" => match v.as_deref().unwrap_or("") {
                "click" => Some(EventKind::Click),
                "impression" => Some(EventKind::Impression),
                "" => return Err("'event' must be 'click' or 'impression'".into()),
                other => {
                    return Err(format!(
                        "unknown event kind {other:?}: expected 'click' or 'impression'"
                    ))
                }
            },
            _ => None,
        };
        kinds.extend(found);
    }
    let kind = match kinds.as_slice() {
        [] => return Err("missing event kind: add '&click' or '&impression'".into()),
        [k] => *k,
        _ => return Err("exactly one event kind per request ('click' or 'impression')".into()),
    };
    Ok(Valid {
        timestamp,
        user: user.to_owned(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const W: Window = Window {
        now_ms: NOW,
        max_event_age_ms: 24 * 3_600_000,
        max_future_skew_ms: 300_000,
    };

    fn ok(q: &str) -> Valid {
        validate(q, W).unwrap_or_else(|e| panic!("{q}: {e}"))
    }
    fn err(q: &str) -> String {
        validate(q, W).expect_err(q)
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
            assert_eq!(v.timestamp, NOW);
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
        assert!(at(NOW + 300_001).unwrap_err().contains("ahead"));
        assert!(at(NOW - 24 * 3_600_000).is_ok());
        assert!(at(NOW - 24 * 3_600_000 - 1).unwrap_err().contains("older"));
        // Seconds sent instead of milliseconds are far in the past: rejected, not mis-bucketed.
        assert!(at(NOW / 1000).unwrap_err().contains("older"));
    }
}
