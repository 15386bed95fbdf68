//! Strict parsing of URL query strings. Unlike lossy decoders, a malformed percent escape or
//! a value that is not UTF-8 after decoding is an error, so the caller can answer 400
//! instead of silently storing a replacement character.
//!
//! Hand-written for that reason: `form_urlencoded` (behind `url` and `serde_urlencoded`)
//! passes a broken escape through as text and replaces invalid UTF-8 with U+FFFD, so a user
//! id `%FF` and one `%FE` would both be stored as `\u{FFFD}`, one user; and it parses a bare
//! `click` (a flag, here `None`) and `click=` (an empty value) alike.

use crate::hour::{Millis, MAX_TIMESTAMP_MS};
use smallvec::SmallVec;
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
/// Both borrow from the query string unless decoding changed them. Up to four are held
/// inline (a GET has one or two, a POST three or four), so the usual request allocates
/// nothing here.
pub type Params<'a> = SmallVec<[Param<'a>; 4]>;

/// One parameter: the decoded key, and the decoded value (`None` for a bare key).
pub type Param<'a> = (Cow<'a, str>, Option<Cow<'a, str>>);

/// Parses `a=1&b&c=x%20y` into `[("a", Some("1")), ("b", None), ("c", Some("x y"))]`.
/// A key without `=` has value `None`; `+` decodes to a space; empty segments are skipped.
pub fn parse(query: &str) -> Result<Params<'_>, QueryError> {
    // One pass over the bytes finds the segments, their first `=` and whether they hold an
    // escape (a GET's hottest path: iterator adaptors cost several times more). Slicing at
    // `&` and `=` is always on a char boundary: they are ASCII, which never occurs inside a
    // multi-byte UTF-8 sequence.
    let mut out = Params::new();
    let bytes = query.as_bytes();
    let (mut start, mut eq, mut escaped) = (0, None, false);
    for i in 0..=bytes.len() {
        match bytes.get(i) {
            Some(b'=') if eq.is_none() => eq = Some(i),
            Some(b'%' | b'+') => escaped = true,
            Some(b'&') | None => {
                if i > start {
                    let (k, v) = match eq {
                        Some(e) => (&query[start..e], Some(&query[e + 1..i])),
                        None => (&query[start..i], None),
                    };
                    out.push(if escaped {
                        decode_param(k, v)?
                    } else {
                        (Cow::Borrowed(k), v.map(Cow::Borrowed))
                    });
                }
                (start, eq, escaped) = (i + 1, None, false);
            }
            Some(_) => {}
        }
    }
    Ok(out)
}

/// A key and value of which at least one holds an escape.
fn decode_param<'a>(k: &'a str, v: Option<&'a str>) -> Result<Param<'a>, QueryError> {
    let key = decode(k)?;
    let value = v.map(decode).transpose().map_err(|e| match e {
        QueryError::BadEscape(_) => QueryError::BadEscape(key.to_string()),
        QueryError::NotUtf8(_) => QueryError::NotUtf8(key.to_string()),
    })?;
    Ok((key, value))
}

fn decode(s: &str) -> Result<Cow<'_, str>, QueryError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
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

/// Why a parameter of milliseconds (`timestamp`, `from`, `to`) was refused, phrased for a
/// 400 body; each names the parameter.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum MillisError {
    #[error("missing query parameter '{0}' (milliseconds since the Unix epoch)")]
    Missing(&'static str),
    #[error("'{0}' must be a base-10 integer of milliseconds since the Unix epoch")]
    NotAnInteger(&'static str),
    #[error("'{0}' must not be negative")]
    Negative(&'static str),
    #[error("'{0}' is beyond year 9999")]
    TooLarge(&'static str),
    #[error("'{0}' given more than once")]
    Repeated(&'static str),
}

/// The one parser of a parameter of milliseconds: a base-10 integer,
/// `0..=MAX_TIMESTAMP_MS`, given at most once; `None` when it is absent.
pub fn millis_param(
    params: &Params<'_>,
    name: &'static str,
) -> Result<Option<Millis>, MillisError> {
    let mut found = params.iter().filter(|(k, _)| k == name);
    let Some((_, value)) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(MillisError::Repeated(name));
    }
    millis_value(name, value.as_deref().unwrap_or("")).map(Some)
}

/// The `timestamp` parameter, which must be given ([`millis_param`]).
pub fn parse_timestamp(params: &Params<'_>) -> Result<Millis, MillisError> {
    millis_param(params, "timestamp")?.ok_or(MillisError::Missing("timestamp"))
}

/// The query's hottest form, `timestamp={digits}` alone, read without building the
/// parameter list: the same timestamp that [`parse`] then [`parse_timestamp`] give it, for
/// about a fifth of their instructions (most GETs are this; docs/benchmarks-notes.md).
/// `None` for any other query, valid or not, which then takes the general way and gets its
/// exact error there (a `&`, an escape, a repeated or a missing parameter: the value's
/// checks fail on anything but the lone form).
pub fn lone_timestamp(query: &str) -> Option<Millis> {
    millis_value("timestamp", query.strip_prefix("timestamp=")?).ok()
}

/// The checks of the decoded value of parameter `name`.
fn millis_value(name: &'static str, value: &str) -> Result<Millis, MillisError> {
    // The usual value: 1 to 18 digits, which fit an i64 whatever they are, so they are
    // converted without overflow checks (a third of the general loop's instructions, on
    // every GET). Anything else (a sign, another byte, more digits) takes the general loop.
    if (1..=18).contains(&value.len()) {
        let (mut ms, mut digits) = (0u64, true);
        for b in value.bytes() {
            let d = b.wrapping_sub(b'0');
            digits &= d < 10;
            ms = ms.wrapping_mul(10).wrapping_add(u64::from(d));
        }
        if digits {
            return match i64::try_from(ms) {
                Ok(ms) if ms <= MAX_TIMESTAMP_MS => Ok(Millis(ms)),
                _ => Err(MillisError::TooLarge(name)),
            };
        }
    }
    if value.is_empty() {
        return Err(MillisError::Missing(name));
    }
    let digits = value.strip_prefix('-').unwrap_or(value);
    // Checked and converted in one pass; an overflow is only known once every byte is known
    // to be a digit (`12x` with twenty digits is not an integer, not too large).
    let mut ms: Option<i64> = Some(0);
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return Err(MillisError::NotAnInteger(name));
        }
        ms = ms
            .and_then(|m| m.checked_mul(10))
            .and_then(|m| m.checked_add(i64::from(b - b'0')));
    }
    if digits.is_empty() {
        return Err(MillisError::NotAnInteger(name));
    }
    if value.starts_with('-') {
        return Err(MillisError::Negative(name));
    }
    match ms {
        Some(ms) if ms <= MAX_TIMESTAMP_MS => Ok(Millis(ms)),
        _ => Err(MillisError::TooLarge(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition the one-pass parser must agree with: split at `&`, skip empty
    /// segments, split each at its first `=`, decode both halves.
    fn reference(query: &str) -> Result<Vec<Param<'_>>, QueryError> {
        query
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|segment| match segment.split_once('=') {
                Some((k, v)) => decode_param(k, Some(v)),
                None => decode_param(segment, None),
            })
            .collect()
    }

    #[test]
    fn the_one_pass_parser_agrees_with_the_plain_definition() {
        let parts = [
            "", "a", "=", "&", "b=1", "%20", "+", "=x", "ü", "%zz", "%C3%BC", "&&",
        ];
        let mut n = 0;
        for x in parts {
            for y in parts {
                for z in parts {
                    let q = format!("{x}{y}{z}");
                    assert_eq!(parse(&q).map(|p| p.to_vec()), reference(&q), "query {q:?}");
                    n += 1;
                }
            }
        }
        assert_eq!(n, 12 * 12 * 12);
    }

    #[test]
    fn the_lone_timestamp_agrees_with_the_general_way() {
        let parts = [
            "",
            "timestamp=",
            "timestamp",
            "=",
            "&",
            "0",
            "7",
            "-",
            "1700000000000",
            "x",
            "%30",
            "+",
            "253402300799999",
            "9",
            "&x=1",
            "&timestamp=1",
        ];
        let mut taken = 0;
        for x in parts {
            for y in parts {
                for z in parts {
                    let q = format!("{x}{y}{z}");
                    let general = parse(&q)
                        .ok()
                        .and_then(|p| (p.len() == 1).then(|| parse_timestamp(&p).ok()).flatten());
                    match lone_timestamp(&q) {
                        Some(ms) => {
                            taken += 1;
                            assert_eq!(general, Some(ms), "query {q:?}");
                        }
                        // Declined: the general way answers it. Only forms other than
                        // digits alone after `timestamp=` may be declined.
                        None => {
                            let plain = q.strip_prefix("timestamp=").is_some_and(|d| {
                                !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
                            });
                            assert!(
                                !(plain && general.is_some()),
                                "query {q:?} declined though it is the lone form"
                            );
                        }
                    }
                }
            }
        }
        assert!(taken > 20, "the fast way took only {taken} queries");
        assert_eq!(
            lone_timestamp("timestamp=1700000000000"),
            Some(Millis(1_700_000_000_000))
        );
        assert_eq!(
            lone_timestamp("timestamp=253402300799999"),
            Some(Millis(253_402_300_799_999))
        );
        assert_eq!(lone_timestamp("timestamp=253402300800000"), None);
        assert_eq!(
            lone_timestamp("timestamp=0000000000000001"),
            Some(Millis(1))
        );
        assert_eq!(
            parse_timestamp(&parse("timestamp=0000000000000001").unwrap()),
            Ok(Millis(1))
        );
        assert_eq!(lone_timestamp("timestamp=-5"), None);
        assert_eq!(lone_timestamp("timestamp=5&user=a"), None);
        assert_eq!(lone_timestamp("Timestamp=5"), None);
    }

    fn kv<'a>(k: &'a str, v: Option<&'a str>) -> (Cow<'a, str>, Option<Cow<'a, str>>) {
        (Cow::Borrowed(k), v.map(Cow::Borrowed))
    }

    #[test]
    fn parses_flags_values_and_escapes() {
        assert_eq!(
            parse("timestamp=5&user=a%20b+c&click&&x=")
                .unwrap()
                .to_vec(),
            vec![
                kv("timestamp", Some("5")),
                kv("user", Some("a b c")),
                kv("click", None),
                kv("x", Some("")),
            ]
        );
        assert_eq!(
            parse("user=%C3%BC").unwrap().to_vec(),
            vec![kv("user", Some("ü"))]
        );
        assert!(parse("").unwrap().is_empty());
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
        assert_eq!(p("timestamp=1700000000000"), Ok(Millis(1_700_000_000_000)));
        assert_eq!(p("timestamp=0"), Ok(Millis(0)));
        assert_eq!(p("timestamp=007"), Ok(Millis(7)));
        assert_eq!(p("x=1"), Err(MillisError::Missing("timestamp")));
        assert_eq!(p("timestamp"), Err(MillisError::Missing("timestamp")));
        assert_eq!(p("timestamp="), Err(MillisError::Missing("timestamp")));
        assert_eq!(
            p("timestamp=abc"),
            Err(MillisError::NotAnInteger("timestamp"))
        );
        assert_eq!(
            p("timestamp=1.5"),
            Err(MillisError::NotAnInteger("timestamp"))
        );
        assert_eq!(
            p("timestamp=1e3"),
            Err(MillisError::NotAnInteger("timestamp"))
        );
        assert_eq!(
            p("timestamp=+5"),
            Err(MillisError::NotAnInteger("timestamp"))
        );
        assert_eq!(
            p("timestamp=%201"),
            Err(MillisError::NotAnInteger("timestamp"))
        );
        assert_eq!(
            p("timestamp=-"),
            Err(MillisError::NotAnInteger("timestamp"))
        );
        assert_eq!(p("timestamp=-5"), Err(MillisError::Negative("timestamp")));
        assert_eq!(
            p("timestamp=99999999999999999999"),
            Err(MillisError::TooLarge("timestamp"))
        );
        assert_eq!(
            p("timestamp=253402300800000"),
            Err(MillisError::TooLarge("timestamp"))
        );
        assert_eq!(
            p("timestamp=99999999999999999999x"),
            Err(MillisError::NotAnInteger("timestamp"))
        );
        assert_eq!(
            p("timestamp=-99999999999999999999"),
            Err(MillisError::Negative("timestamp"))
        );
        assert_eq!(
            p("timestamp=253402300799999"),
            Ok(Millis(253_402_300_799_999))
        );
        assert_eq!(
            p("timestamp=1&timestamp=2"),
            Err(MillisError::Repeated("timestamp"))
        );
        // Either side of the 18 digits converted without overflow checks.
        assert_eq!(
            p("timestamp=999999999999999999"),
            Err(MillisError::TooLarge("timestamp"))
        );
        assert_eq!(
            p("timestamp=9999999999999999999"),
            Err(MillisError::TooLarge("timestamp"))
        );
        assert_eq!(p("timestamp=000000000000000001"), Ok(Millis(1)));
        assert_eq!(p("timestamp=0000000000000000001"), Ok(Millis(1)));
        assert_eq!(
            p("timestamp=00000000000000000x"),
            Err(MillisError::NotAnInteger("timestamp"))
        );
        assert_eq!(
            p("timestamp=/0000000000000000"),
            Err(MillisError::NotAnInteger("timestamp"))
        );
        assert_eq!(p("timestamp=-1"), Err(MillisError::Negative("timestamp")));
    }
}
