//! The records that flow through Kafka: [`Event`] on the events topic (key = user id) and
//! [`Partial`] on the compacted hourly topic (key = hour and source partition).
//!
//! **Format.** Events are written in a compact binary format since format 2 ([`binary`],
//! [`EVENT_FORMAT`]); partials and dead letters are JSON objects whose `v` field is their
//! format ([`JSON_FORMAT`], 1). JSON records written before formats were numbered have no
//! `v` (format 0) and the same fields as format 1; an event of format 0 or 1 (JSON) is read
//! as well as one of format 2, so a topic that holds both reads right. A record of a newer
//! format is refused with [`RecordError::UnknownFormat`], never guessed at: a rolling upgrade
//! upgrades readers (processor, materializer) before writers (command, processor). The
//! tests read records of each format as the releases wrote them.

pub mod binary;

pub use binary::EVENT_FORMAT;

use crate::hour::{HourStart, Millis};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The format of the JSON records this build writes (their `v` field); it reads this one and
/// every earlier one.
pub const JSON_FORMAT: u8 = 1;

/// Why a record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record of format {0}, which this build does not read; upgrade it")]
    UnknownFormat(u8),
    #[error("not a valid record: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("not a valid record: {0}")]
    Malformed(&'static str),
}

impl RecordError {
    /// The `reason` label of a dead letter.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::UnknownFormat(_) => "unknown_format",
            RecordError::Invalid(_) | RecordError::Malformed(_) => "undecodable",
        }
    }
}

fn check_format(v: u8) -> Result<(), RecordError> {
    if v > JSON_FORMAT {
        return Err(RecordError::UnknownFormat(v));
    }
    Ok(())
}

/// What a user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Click,
    Impression,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Click => "click",
            EventKind::Impression => "impression",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventKind {
    /// Every kind, in the order of the API's documentation.
    pub const ALL: [EventKind; 2] = [EventKind::Click, EventKind::Impression];

    /// The kind named `s` (`click`, `impression`): the one parse of a kind's name, for the
    /// query string, the batch lines and the records alike.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl FromStr for EventKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        EventKind::parse(s).ok_or(())
    }
}

/// One accepted event. The Kafka record timestamp carries the time the command service
/// received it; `received_at` repeats it in the payload for tools that read the JSON only.
/// On the topic it is [`Event::encode`]d, and read back as an [`EventRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Event time.
    pub timestamp: Millis,
    /// User id, 1..=256 bytes of UTF-8.
    pub user: String,
    pub kind: EventKind,
    /// Receipt time at the command service.
    pub received_at: Millis,
    /// The client's event id (1..=128 bytes): the pipeline counts a (user, id) pair at most
    /// once within the dedup window. Events without one are never deduplicated.
    pub id: Option<String>,
}

impl Event {
    /// The record's value on the events topic, in today's [`EVENT_FORMAT`] (binary).
    pub fn encode(&self) -> Vec<u8> {
        binary::encode(&self.record())
    }

    /// The record's value in JSON format 1, as releases before format 2 wrote it (for the
    /// tests of a topic that holds both).
    pub fn encode_json(&self) -> Vec<u8> {
        let record = EventRecord {
            v: JSON_FORMAT,
            ..self.record()
        };
        serde_json::to_vec(&record).expect("events always serialize")
    }

    fn record(&self) -> EventRecord<'_> {
        EventRecord {
            v: EVENT_FORMAT,
            timestamp: self.timestamp,
            user: Cow::Borrowed(&self.user),
            kind: self.kind,
            received_at: self.received_at,
            id: self.id.as_deref().map(Cow::Borrowed),
        }
    }
}

/// An event as read from the events topic: borrowed from the record (in JSON, where no escape
/// had to be decoded), so the processor's hot path allocates nothing for most events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord<'a> {
    /// The format: absent (0) in JSON records of the first releases, 1 in later JSON ones,
    /// [`EVENT_FORMAT`] in binary ones.
    #[serde(default)]
    v: u8,
    pub timestamp: Millis,
    #[serde(borrow)]
    pub user: Cow<'a, str>,
    pub kind: EventKind,
    #[serde(default)]
    pub received_at: Millis,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
}

impl<'a> EventRecord<'a> {
    /// Reads an events-topic record of any format up to [`EVENT_FORMAT`]: binary, or JSON
    /// (which starts with `{`, or white space before it).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, RecordError> {
        match bytes.first() {
            Some(&EVENT_FORMAT) => binary::decode(bytes),
            Some(b'{' | b' ' | b'\t' | b'\r' | b'\n') => {
                let r: Self = serde_json::from_slice(bytes)?;
                check_format(r.v)?;
                Ok(r)
            }
            Some(&other) => Err(RecordError::UnknownFormat(other)),
            None => Err(RecordError::Malformed("empty")),
        }
    }

    /// The event, owning its strings.
    pub fn into_event(self) -> Event {
        Event {
            timestamp: self.timestamp,
            user: self.user.into_owned(),
            kind: self.kind,
            received_at: self.received_at,
            id: self.id.map(Cow::into_owned),
        }
    }
}

/// Absolute totals of one source partition for one hour, as of source offset `offset`
/// (the last events-topic offset that changed them). Deterministic: the same
/// `(hour, partition, offset)` always carries the same numbers. On the hourly topic it is
/// [`Partial::encode`]d and [`Partial::decode`]d.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    pub hour: HourStart,
    /// Partition of the events topic these totals come from.
    pub partition: i32,
    pub clicks: u64,
    pub impressions: u64,
    pub unique_users: u64,
    /// Last source offset included.
    pub offset: i64,
    /// Receipt time (command clock) of the newest event included, for freshness metrics.
    pub newest_received_at: Millis,
}

/// A partial as written on the hourly topic.
#[derive(Serialize, Deserialize)]
struct PartialRecord {
    #[serde(default)]
    v: u8,
    hour: HourStart,
    partition: i32,
    clicks: u64,
    impressions: u64,
    unique_users: u64,
    offset: i64,
    #[serde(default)]
    newest_received_at: Millis,
}

impl Partial {
    /// The record's value on the hourly topic, in today's [`JSON_FORMAT`].
    pub fn encode(&self) -> Vec<u8> {
        let record = PartialRecord {
            v: JSON_FORMAT,
            hour: self.hour,
            partition: self.partition,
            clicks: self.clicks,
            impressions: self.impressions,
            unique_users: self.unique_users,
            offset: self.offset,
            newest_received_at: self.newest_received_at,
        };
        serde_json::to_vec(&record).expect("partials always serialize")
    }

    /// Reads an hourly-topic record of any format up to [`JSON_FORMAT`].
    pub fn decode(bytes: &[u8]) -> Result<Partial, RecordError> {
        let r: PartialRecord = serde_json::from_slice(bytes)?;
        check_format(r.v)?;
        Ok(Partial {
            hour: r.hour,
            partition: r.partition,
            clicks: r.clicks,
            impressions: r.impressions,
            unique_users: r.unique_users,
            offset: r.offset,
            newest_received_at: r.newest_received_at,
        })
    }

    /// Key on the compacted hourly topic: one record survives per (hour, source partition).
    pub fn key(&self) -> String {
        format!("{}/{}", self.hour, self.partition)
    }
}

/// Totals of one hour, the sum of its partials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HourTotals {
    pub unique_users: u64,
    pub clicks: u64,
    pub impressions: u64,
}

impl HourTotals {
    pub fn add(&mut self, p: &Partial) {
        self.unique_users += p.unique_users;
        self.clicks += p.clicks;
        self.impressions += p.impressions;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>) -> Event {
        Event {
            timestamp: Millis(1_700_000_000_000),
            user: "ünïcode \"user\"".into(),
            kind: EventKind::Impression,
            received_at: Millis(1_700_000_000_500),
            id: id.map(Into::into),
        }
    }

    #[test]
    fn events_round_trip_with_their_format() {
        for e in [event(None), event(Some("retry-1"))] {
            let b = e.encode();
            assert_eq!(b[0], EVENT_FORMAT);
            let back = EventRecord::decode(&b).unwrap();
            assert!(
                matches!(back.user, Cow::Borrowed(_)),
                "the user is not copied"
            );
            assert_eq!(back.into_event(), e);
            let json = String::from_utf8(e.encode_json()).unwrap();
            assert!(json.starts_with("{\"v\":1,"), "{json}");
            assert!(json.contains("\"kind\":\"impression\""), "{json}");
            assert_eq!(json.contains("\"id\""), e.id.is_some(), "{json}");
            let back = EventRecord::decode(json.as_bytes()).unwrap();
            assert!(
                matches!(back.user, Cow::Owned(_)),
                "an escaped user is decoded"
            );
            assert_eq!(back.into_event(), e);
        }
    }

    #[test]
    fn binary_events_are_checked_field_by_field() {
        let good = event(Some("r")).encode();
        let bad = |b: &[u8]| matches!(EventRecord::decode(b), Err(RecordError::Malformed(_)));
        assert!(bad(&good[..19]), "shorter than its fixed fields");
        assert!(bad(&good[..good.len() - 1]), "id cut short");
        let mut kind = good.clone();
        kind[1] = 7;
        assert!(bad(&kind));
        let mut long_user = good.clone();
        long_user[18] = 0xff;
        assert!(bad(&long_user));
        let mut not_utf8 = event(None).encode();
        not_utf8[20] = 0xff;
        assert!(bad(&not_utf8));
        let mut empty_id = event(None).encode();
        empty_id.push(0);
        assert!(bad(&empty_id));
        assert!(bad(&[]));
        assert!(matches!(
            EventRecord::decode(&[3, 0, 0]),
            Err(RecordError::UnknownFormat(3))
        ));
        // Every kind and a user of the longest length survive.
        let e = Event {
            kind: EventKind::Click,
            user: "u".repeat(256),
            ..event(None)
        };
        assert_eq!(EventRecord::decode(&e.encode()).unwrap().into_event(), e);
    }

    #[test]
    fn records_of_every_earlier_format_are_read() {
        // Written by the releases before formats were numbered (format 0).
        let event = br#"{"timestamp":1700000000000,"user":"alice","kind":"click","received_at":1700000000500}"#;
        let e = EventRecord::decode(event).unwrap();
        assert!(
            matches!(e.user, Cow::Borrowed("alice")),
            "plain strings are borrowed"
        );
        assert_eq!(
            (e.kind, e.received_at, e.id),
            (EventKind::Click, Millis(1_700_000_000_500), None)
        );
        let partial = br#"{"hour":1699999200000,"partition":3,"clicks":2,"impressions":1,"unique_users":2,"offset":41,"newest_received_at":1700000000500}"#;
        let p = Partial::decode(partial).unwrap();
        assert_eq!(
            (p.partition, p.clicks, p.unique_users, p.offset),
            (3, 2, 2, 41)
        );
        let oldest = br#"{"hour":1699999200000,"partition":3,"clicks":2,"impressions":1,"unique_users":2,"offset":41}"#;
        assert_eq!(
            Partial::decode(oldest).unwrap().newest_received_at,
            Millis(0)
        );
    }

    #[test]
    fn a_newer_format_is_refused() {
        let event = br#"{"v":2,"timestamp":1700000000000,"user":"alice","kind":"click"}"#;
        assert!(matches!(
            EventRecord::decode(event),
            Err(RecordError::UnknownFormat(2))
        ));
        let not_an_hour = br#"{"v":1,"hour":1700000000000,"partition":0,"clicks":0,"impressions":0,"unique_users":0,"offset":0}"#;
        assert!(matches!(
            Partial::decode(not_an_hour),
            Err(RecordError::Invalid(_))
        ));
        let partial = br#"{"v":9,"hour":0,"partition":0,"clicks":0,"impressions":0,"unique_users":0,"offset":0}"#;
        assert!(matches!(
            Partial::decode(partial),
            Err(RecordError::UnknownFormat(9))
        ));
        assert_eq!(RecordError::UnknownFormat(2).reason(), "unknown_format");
    }

    #[test]
    fn partials_round_trip_with_their_format() {
        let p = Partial {
            hour: HourStart::new(1_699_999_200_000).unwrap(),
            partition: 11,
            clicks: 5,
            impressions: 7,
            unique_users: 3,
            offset: 99,
            newest_received_at: Millis(1_700_000_000_000),
        };
        let json = p.encode();
        assert!(json.starts_with(b"{\"v\":1,"));
        assert_eq!(Partial::decode(&json).unwrap(), p);
    }

    #[test]
    fn kinds_parse_from_their_names_only() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("Click"), None);
        assert_eq!(EventKind::parse(""), None);
    }

    #[test]
    fn totals_sum_partials() {
        let mut t = HourTotals::default();
        for p in 0..3 {
            t.add(&Partial {
                hour: HourStart::new(0).unwrap(),
                partition: p,
                clicks: 2,
                impressions: 3,
                unique_users: 4,
                offset: 9,
                newest_received_at: Millis(0),
            });
        }
        assert_eq!(
            t,
            HourTotals {
                unique_users: 12,
                clicks: 6,
                impressions: 9
            }
        );
    }
}
