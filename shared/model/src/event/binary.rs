//! The events topic's value since format 2: a few fixed fields and two strings, read without
//! a parser and without copying the strings.
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | the format, [`EVENT_FORMAT`] (2) |
//! | 1 | the kind: 0 click, 1 impression |
//! | 8 | the event's time, ms since the epoch, little-endian |
//! | 8 | the receipt time at the command, likewise |
//! | 2 | the user's length in bytes, 1 to 256, little-endian |
//! | n | the user, UTF-8 |
//! | 1, m | when the event has an id: its length (1 to 128), then the id, UTF-8 |
//!
//! A JSON record (formats 0 and 1) starts with `{`, which no binary format number is, so one
//! topic can hold both (a rolling upgrade writes both for a while).

use super::{EventKind, EventRecord, RecordError};
use crate::hour::Millis;
use std::borrow::Cow;

/// The format of the events this build writes.
pub const EVENT_FORMAT: u8 = 2;

/// `event` in format 2.
pub(super) fn encode(e: &EventRecord<'_>) -> Vec<u8> {
    let user = e.user.as_bytes();
    let id = e.id.as_deref().map(str::as_bytes);
    let mut b = Vec::with_capacity(20 + user.len() + id.map_or(0, |i| 1 + i.len()));
    b.push(EVENT_FORMAT);
    b.push(match e.kind {
        EventKind::Click => 0,
        EventKind::Impression => 1,
    });
    b.extend_from_slice(&e.timestamp.0.to_le_bytes());
    b.extend_from_slice(&e.received_at.0.to_le_bytes());
    let user_len = u16::try_from(user.len()).expect("user ids are at most 256 bytes");
    b.extend_from_slice(&user_len.to_le_bytes());
    b.extend_from_slice(user);
    if let Some(id) = id {
        b.push(u8::try_from(id.len()).expect("ids are at most 128 bytes"));
        b.extend_from_slice(id);
    }
    b
}

/// A record of format 2 (its first byte already checked).
pub(super) fn decode(b: &[u8]) -> Result<EventRecord<'_>, RecordError> {
    let malformed = RecordError::Malformed;
    let (fixed, rest) = b
        .split_at_checked(20)
        .ok_or(malformed("shorter than its fields"))?;
    let kind = match fixed[1] {
        0 => EventKind::Click,
        1 => EventKind::Impression,
        _ => return Err(malformed("unknown kind")),
    };
    let le = |at: usize| i64::from_le_bytes(fixed[at..at + 8].try_into().expect("8 bytes"));
    let user_len = usize::from(u16::from_le_bytes([fixed[18], fixed[19]]));
    let (user, rest) = rest
        .split_at_checked(user_len)
        .ok_or(malformed("user cut short"))?;
    let id = match rest.split_first() {
        None => None,
        Some((&len, id)) if usize::from(len) == id.len() && len > 0 => Some(text(id)?),
        Some(_) => return Err(malformed("id of the wrong length")),
    };
    if user.is_empty() {
        return Err(malformed("empty user"));
    }
    Ok(EventRecord {
        v: EVENT_FORMAT,
        timestamp: Millis(le(2)),
        user: text(user)?,
        kind,
        received_at: Millis(le(10)),
        id,
    })
}

fn text(b: &[u8]) -> Result<Cow<'_, str>, RecordError> {
    std::str::from_utf8(b)
        .map(Cow::Borrowed)
        .map_err(|_| RecordError::Malformed("a string that is not UTF-8"))
}
