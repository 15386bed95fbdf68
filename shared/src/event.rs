//! The records that flow through Kafka: [`Event`] on the events topic (key = user id) and
//! [`Partial`] on the compacted hourly topic (key = hour and source partition).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

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

impl FromStr for EventKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "click" => Ok(EventKind::Click),
            "impression" => Ok(EventKind::Impression),
            _ => Err(()),
        }
    }
}

/// One accepted event. The Kafka record timestamp carries the time the command service
/// received it; `received_at` repeats it in the payload for tools that read the JSON only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub timestamp: i64,
    /// User id, 1..=256 bytes of UTF-8.
    pub user: String,
    pub kind: EventKind,
    /// Receipt time at the command service, milliseconds since the epoch.
    pub received_at: i64,
    /// The client's event id (1..=128 bytes): the pipeline counts a (user, id) pair at most
    /// once within the dedup window. Events without one are never deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Absolute totals of one source partition for one hour, as of source offset `offset`
/// (the last events-topic offset that changed them). Deterministic: the same
/// `(hour, partition, offset)` always carries the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    /// Hour start, milliseconds since the epoch.
    pub hour: i64,
    /// Partition of the events topic these totals come from.
    pub partition: i32,
    pub clicks: u64,
    pub impressions: u64,
    pub unique_users: u64,
    /// Last source offset included.
    pub offset: i64,
    /// Receipt time (command clock) of the newest event included, for freshness metrics.
    #[serde(default)]
    pub newest_received_at: i64,
}

impl Partial {
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

    #[test]
    fn event_json_round_trip() {
        let e = Event {
            timestamp: 1_700_000_000_000,
            user: "ünïcode user".into(),
            kind: EventKind::Impression,
            received_at: 1_700_000_000_500,
            id: None,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"kind\":\"impression\""), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        assert!(!json.contains("\"id\""), "no id, no field: {json}");
        let with_id = Event {
            id: Some("retry-1".into()),
            ..e
        };
        let json = serde_json::to_string(&with_id).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), with_id);
    }

    #[test]
    fn totals_sum_partials() {
        let mut t = HourTotals::default();
        for p in 0..3 {
            t.add(&Partial {
                hour: 0,
                partition: p,
                clicks: 2,
                impressions: 3,
                unique_users: 4,
                offset: 9,
                newest_received_at: 0,
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
