//! Strict parsing of URL query strings. Unlike lossy decoders, a malformed percent escape or
//! a value that is not UTF-8 after decoding is an error, so the caller can answer 400
//! instead of silently storing a replacement character.
//!
//! Hand-written for that reason: `form_urlencoded` (behind `url` and `serde_urlencoded`)
//! passes a broken escape through as text and replaces invalid UTF-8 with U+FFFD, so a user
//! id `%FF` and one `%FE` would both be stored as `\u{FFFD}`, one user; and it parses a bare
//! `click` (a flag, here `None`) and `click=` (an empty value) alike.

use std::borrow::Cow;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("malformed percent-encoding in query parameter {0:?}")]
    BadEscape(String),
    #[error("query parameter {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

/// Parameters in order: the decoded key, and the decoded value (`None` for a bare key).
/// Both borrow from the query string unless decoding changed them.
pub type Params<'a> = Vec<(Cow<'a, str>, Option<Cow<'a, str>>)>;

/// Parses `a=1&b&c=x%20y` into `[("a", Some("1")), ("b", None), ("c", Some("x y"))]`.
/// A key without `=` has value `None`; `+` decodes to a space; empty segments are skipped.
pub fn parse(query: &str) -> Result<Params<'_>, QueryError> {
    let mut out = Vec::new();
    for segment in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = match segment.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (segment, None),
        };
        let key = decode(k)?;
        let value = v.map(decode).transpose().map_err(|e| match e {
            QueryError::BadEscape(_) => QueryError::BadEscape(key.to_string()),
            QueryError::NotUtf8(_) => QueryError::NotUtf8(key.to_string()),
        })?;
        out.push((key, value));
    }
    Ok(out)
}

fn decode(s: &str) -> Result<Cow<'_, str>, QueryError> {
    if !s.contains(['%', '+']) {
        return Ok(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| QueryError::BadEscape(s.to_owned()))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| QueryError::NotUtf8(s.to_owned()))
}

/// Errors of [`parse_timestamp`], phrased for a 400 body.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("missing query parameter 'timestamp' (milliseconds since the Unix epoch)")]
    Missing,
    #[error("'timestamp' must be a base-10 integer of milliseconds since the Unix epoch")]
    NotAnInteger,
    #[error("'timestamp' must not be negative")]
    Negative,
    #[error("'timestamp' is beyond year 9999")]
    TooLarge,
    #[error("'timestamp' given more than once")]
    Repeated,
}

/// Finds and validates the `timestamp` parameter: a base-10 integer of milliseconds,
/// `0..=MAX_TIMESTAMP_MS`, given exactly once.
pub fn parse_timestamp(params: &Params<'_>) -> Result<i64, TimestampError> {
    let mut found = params.iter().filter(|(k, _)| k == "timestamp");
    let (_, value) = found.next().ok_or(TimestampError::Missing)?;
    if found.next().is_some() {
        return Err(TimestampError::Repeated);
    }
    let value = value.as_deref().unwrap_or("");
    if value.is_empty() {
        return Err(TimestampError::Missing);
    }
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TimestampError::NotAnInteger);
    }
    if value.starts_with('-') {
        return Err(TimestampError::Negative);
    }
    let ms: i64 = value.parse().map_err(|_| TimestampError::TooLarge)?;
    if ms > crate::hour::MAX_TIMESTAMP_MS {
        return Err(TimestampError::TooLarge);
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv<'a>(k: &'a str, v: Option<&'a str>) -> (Cow<'a, str>, Option<Cow<'a, str>>) {
        (Cow::Borrowed(k), v.map(Cow::Borrowed))
    }

    #[test]
    fn parses_flags_values_and_escapes() {
        assert_eq!(
            parse("timestamp=5&user=a%20b+c&click&&x=").unwrap(),
            vec![
                kv("timestamp", Some("5")),
                kv("user", Some("a b c")),
                kv("click", None),
                kv("x", Some("")),
            ]
        );
        assert_eq!(parse("user=%C3%BC").unwrap(), vec![kv("user", Some("ü"))]);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn rejects_bad_escapes_and_invalid_utf8() {
        assert_eq!(parse("user=%zz"), Err(QueryError::BadEscape("user".into())));
        assert_eq!(parse("user=%4"), Err(QueryError::BadEscape("user".into())));
        assert_eq!(
            parse("user=%ff%fe"),
            Err(QueryError::NotUtf8("user".into()))
        );
        assert!(matches!(parse("%zz=1"), Err(QueryError::BadEscape(_))));
    }

    #[test]
    fn timestamps() {
        let p = |s: &str| parse_timestamp(&parse(s).unwrap());
        assert_eq!(p("timestamp=1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(p("timestamp=0"), Ok(0));
        assert_eq!(p("timestamp=007"), Ok(7));
        assert_eq!(p("x=1"), Err(TimestampError::Missing));
        assert_eq!(p("timestamp"), Err(TimestampError::Missing));
        assert_eq!(p("timestamp="), Err(TimestampError::Missing));
        assert_eq!(p("timestamp=abc"), Err(TimestampError::NotAnInteger));
        assert_eq!(p("timestamp=1.5"), Err(TimestampError::NotAnInteger));
        assert_eq!(p("timestamp=1e3"), Err(TimestampError::NotAnInteger));
        assert_eq!(p("timestamp=+5"), Err(TimestampError::NotAnInteger));
        assert_eq!(p("timestamp=%201"), Err(TimestampError::NotAnInteger));
        assert_eq!(p("timestamp=-"), Err(TimestampError::NotAnInteger));
        assert_eq!(p("timestamp=-5"), Err(TimestampError::Negative));
        assert_eq!(
            p("timestamp=99999999999999999999"),
            Err(TimestampError::TooLarge)
        );
        assert_eq!(
            p("timestamp=253402300800000"),
            Err(TimestampError::TooLarge)
        );
        assert_eq!(p("timestamp=253402300799999"), Ok(253_402_300_799_999));
        assert_eq!(p("timestamp=1&timestamp=2"), Err(TimestampError::Repeated));
    }
}
