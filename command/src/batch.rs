//! `POST /analytics/batch`: newline-delimited JSON, one event per line,
//! `{"timestamp": 1700000000000, "user": "alice", "event": "click", "id": "optional"}`.
//!
//! The body is parsed as it arrives, line by line, with the same field checks as the single
//! POST ([`crate::validate`]); memory is bounded by `--max-body-bytes`. All or nothing: one
//! bad line and nothing is produced (`400` listing the bad lines); otherwise every event is
//! produced and the answer (`200 {"accepted": n}`) waits for the broker's acknowledgement of
//! all of them. Blank lines, CRLF line ends, a last line without a newline and a UTF-8 byte
//! order mark are accepted; fields other than the four are ignored, as unknown query
//! parameters are by the single POST.

use crate::validate::{check_id, check_timestamp, check_user, Rejection, Window};
use analytics_model::event::{Event, EventKind};
use analytics_model::hour::Millis;
use serde::Deserialize;

/// Most bad lines listed in a `400`.
pub const MAX_LISTED_ERRORS: usize = 100;

/// Bounds of one batch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
    pub max_body_bytes: usize,
}

/// One bad line of a batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line: usize,
    pub error: String,
}

/// Why one line was refused: not an event object, or a field the single POST would refuse
/// too (the same [`Rejection`], so the same words).
#[derive(Debug, thiserror::Error)]
enum LineRejection {
    #[error("{0}")]
    Json(String),
    #[error(transparent)]
    Field(#[from] Rejection),
}

/// Why a whole batch was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Over `--max-body-bytes` or `--max-batch-events`: `413`.
    TooLarge(String),
    /// Bad lines (the first [`MAX_LISTED_ERRORS`]) and how many there were: `400`.
    Invalid {
        errors: Vec<LineError>,
        total: usize,
    },
    /// No event at all: `400`.
    Empty,
}

#[derive(Deserialize)]
struct Line {
    timestamp: Millis,
    user: String,
    event: String,
    #[serde(default)]
    id: Option<String>,
}

/// Incremental NDJSON parser: feed it the body's chunks, then [`Parser::finish`].
pub struct Parser {
    limits: Limits,
    window: Window,
    /// The incomplete last line.
    partial: Vec<u8>,
    line: usize,
    bytes: usize,
    events: Vec<Event>,
    errors: Vec<LineError>,
    bad_lines: usize,
    /// Events and bad lines seen (against `max_events`).
    seen: usize,
}

impl Parser {
    pub fn new(limits: Limits, window: Window) -> Self {
        Self {
            limits,
            window,
            partial: Vec::new(),
            line: 0,
            bytes: 0,
            events: Vec::new(),
            errors: Vec::new(),
            bad_lines: 0,
            seen: 0,
        }
    }

    /// Takes the next chunk of the body.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<(), BatchError> {
        self.bytes += chunk.len();
        if self.bytes > self.limits.max_body_bytes {
            return Err(BatchError::TooLarge(format!(
                "the body is larger than {} bytes (--max-body-bytes)",
                self.limits.max_body_bytes
            )));
        }
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = chunk.split_at(nl);
            if self.partial.is_empty() {
                self.line_done(head)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line_done(&line)?;
            }
            chunk = &rest[1..];
        }
        self.partial.extend_from_slice(chunk);
        Ok(())
    }

    /// The events of a valid batch.
    pub fn finish(mut self) -> Result<Vec<Event>, BatchError> {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line_done(&last)?;
        }
        if self.bad_lines > 0 {
            return Err(BatchError::Invalid {
                errors: self.errors,
                total: self.bad_lines,
            });
        }
        if self.events.is_empty() {
            return Err(BatchError::Empty);
        }
        Ok(self.events)
    }

    fn line_done(&mut self, raw: &[u8]) -> Result<(), BatchError> {
        self.line += 1;
        let mut raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if self.line == 1 {
            raw = raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw);
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.seen += 1;
        if self.seen > self.limits.max_events {
            return Err(BatchError::TooLarge(format!(
                "more than {} events in one batch (--max-batch-events)",
                self.limits.max_events
            )));
        }
        match self.event(raw) {
            Ok(e) => self.events.push(e),
            Err(error) => {
                self.bad_lines += 1;
                if self.errors.len() < MAX_LISTED_ERRORS {
                    self.errors.push(LineError {
                        line: self.line,
                        error: error.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    fn event(&self, raw: &[u8]) -> Result<Event, LineRejection> {
        let line: Line = serde_json::from_slice(raw).map_err(|e| {
            let e = e.to_string();
            // serde_json's position is within the line, which the client already knows.
            LineRejection::Json(match e.rfind(" at line ") {
                Some(i) => e[..i].to_owned(),
                None => e,
            })
        })?;
        let timestamp = check_timestamp(line.timestamp, self.window)?;
        check_user(&line.user)?;
        let Some(kind) = EventKind::parse(&line.event) else {
            return Err(Rejection::EventUnknown(line.event).into());
        };
        if let Some(id) = &line.id {
            check_id(id)?;
        }
        Ok(Event {
            timestamp,
            user: line.user,
            kind,
            received_at: self.window.now,
            id: line.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::validate::{TEST_NOW as NOW, TEST_WINDOW as W};
    const LIMITS: Limits = Limits {
        max_events: 10,
        max_body_bytes: 4096,
    };

    fn parse(body: &str) -> Result<Vec<Event>, BatchError> {
        let mut p = Parser::new(LIMITS, W);
        p.push(body.as_bytes())?;
        p.finish()
    }

    fn line(user: &str, event: &str, id: Option<&str>) -> String {
        let id = id.map(|i| format!(r#","id":"{i}""#)).unwrap_or_default();
        format!(r#"{{"timestamp":{NOW},"user":"{user}","event":"{event}"{id}}}"#)
    }

    fn errors(body: &str) -> Vec<(usize, String)> {
        match parse(body) {
            Err(BatchError::Invalid { errors, .. }) => {
                errors.into_iter().map(|e| (e.line, e.error)).collect()
            }
            other => panic!("{body:?}: {other:?}"),
        }
    }

    #[test]
    fn accepts_lines_in_every_framing() {
        let a = line("a", "click", None);
        let b = line("b", "impression", Some("x-1"));
        for body in [
            format!("{a}\n{b}\n"),
            format!("{a}\n{b}"),
            format!("{a}\r\n{b}\r\n"),
            format!("\u{feff}{a}\n\n  \n{b}\n"),
            format!("\n{a}\n{b}\n\n"),
        ] {
            let events = parse(&body).unwrap_or_else(|e| panic!("{body:?}: {e:?}"));
            assert_eq!(events.len(), 2, "{body:?}");
            assert_eq!(events[0].user, "a");
            assert_eq!(events[0].kind, EventKind::Click);
            assert_eq!(events[0].id, None);
            assert_eq!(events[1].kind, EventKind::Impression);
            assert_eq!(events[1].id.as_deref(), Some("x-1"));
            assert_eq!(events[1].received_at, Millis(NOW));
        }
        // Unknown fields are ignored.
        let extra = format!(r#"{{"timestamp":{NOW},"user":"a","event":"click","page":"/x"}}"#);
        assert_eq!(parse(&extra).unwrap().len(), 1);
    }

    #[test]
    fn chunks_split_anywhere_parse_the_same() {
        let body = format!(
            "{}\r\n{}\n{}",
            line("a", "click", None),
            line("b", "impression", Some("ü-id")),
            line("c", "click", None)
        );
        let whole = parse(&body).unwrap();
        for size in [1, 2, 3, 7, 64] {
            let mut p = Parser::new(LIMITS, W);
            for chunk in body.as_bytes().chunks(size) {
                p.push(chunk).unwrap();
            }
            assert_eq!(p.finish().unwrap(), whole, "chunks of {size}");
        }
    }

    #[test]
    fn lists_every_bad_line_with_its_number() {
        let body = [
            line("a", "click", None),
            "{not json".to_owned(),
            format!(r#"{{"timestamp":{NOW},"event":"click"}}"#),
            format!(r#"{{"timestamp":"{NOW}","user":"a","event":"click"}}"#),
            line("a", "view", None),
            String::new(),
            line(&"u".repeat(257), "click", None),
        ]
        .join("\n");
        let got = errors(&body);
        let lines: Vec<usize> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [2, 3, 4, 5, 7]);
        assert!(got[0].1.contains("key must be a string"), "{}", got[0].1);
        assert!(got[1].1.contains("missing field `user`"), "{}", got[1].1);
        assert!(got[2].1.contains("invalid type"), "{}", got[2].1);
        assert!(got[3].1.contains("unknown event kind"), "{}", got[3].1);
        assert!(got[4].1.contains("longer than 256"), "{}", got[4].1);
        assert!(got.iter().all(|(_, e)| !e.contains(" at line ")));
    }

    #[test]
    fn field_rules_match_the_single_post() {
        let cases = [
            (
                format!(
                    r#"{{"timestamp":{},"user":"a","event":"click"}}"#,
                    NOW + 300_001
                ),
                "ahead",
            ),
            (
                format!(
                    r#"{{"timestamp":{},"user":"a","event":"click"}}"#,
                    NOW / 1000
                ),
                "older",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"user":"","event":"click"}}"#),
                "empty",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"user":"a\nb","event":"click"}}"#),
                "control",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"user":"a","event":"click","id":""}}"#),
                "1 to 128",
            ),
            (line("a", "click", Some(&"i".repeat(129))), "1 to 128"),
            (
                format!(r#"{{"timestamp":{NOW},"user":"a","event":"click","id":"a\u0007"}}"#),
                "control",
            ),
            (
                format!(r#"{{"timestamp":{NOW},"user":"a","event":"click","id":7}}"#),
                "invalid type",
            ),
            (
                r#"{"timestamp":1.5,"user":"a","event":"click"}"#.to_owned(),
                "invalid type",
            ),
        ];
        for (body, words) in cases {
            let got = errors(&body);
            assert!(got[0].1.contains(words), "{body}: {}", got[0].1);
        }
        assert!(parse(&line("a", "click", Some(&"i".repeat(128)))).is_ok());
    }

    #[test]
    fn limits_and_empty_batches() {
        let eleven = vec![line("a", "click", None); 11].join("\n");
        assert!(
            matches!(parse(&eleven), Err(BatchError::TooLarge(m)) if m.contains("--max-batch-events"))
        );
        let ten = vec![line("a", "click", None); 10].join("\n");
        assert_eq!(parse(&ten).unwrap().len(), 10);
        let big = "x".repeat(4097);
        assert!(
            matches!(parse(&big), Err(BatchError::TooLarge(m)) if m.contains("--max-body-bytes"))
        );
        assert_eq!(parse(""), Err(BatchError::Empty));
        assert_eq!(parse("\n \r\n"), Err(BatchError::Empty));
        // At most 100 bad lines are listed; all are counted.
        let limits = Limits {
            max_events: 1000,
            max_body_bytes: 1 << 20,
        };
        let mut p = Parser::new(limits, W);
        p.push("{}\n".repeat(150).as_bytes()).unwrap();
        match p.finish() {
            Err(BatchError::Invalid { errors, total }) => {
                assert_eq!((errors.len(), total), (100, 150));
                assert_eq!(errors[99].line, 100);
            }
            other => panic!("{other:?}"),
        }
    }
}
