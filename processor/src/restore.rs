//! Where a newly assigned partition starts, so that its rebuilt state is exact.
//!
//! The processor commits, with each offset `c`, the partition watermark `W_c` (largest record
//! timestamp below `c`) as commit metadata. Every event counted at or after `c` belongs to an
//! hour `H` with `end(H) > W_c - max_event_age - max_future_skew` (otherwise the log rule in
//! [`crate::state`] dead-letters it), and every event of such an hour was received at or after
//! `start(H) - max_future_skew`. So replaying from the first offset whose timestamp is at least
//! `T = W_c - max_event_age - 1 h - 2 * max_future_skew` (`offsets_for_times`) rebuilds every
//! hour that can still change completely; hours starting before `T + max_future_skew` are
//! incomplete after the replay and are never published. Offsets below `c` were already
//! published, so they are replayed silently.
//!
//! Without a committed offset, `T` is computed from the wall clock (`now`) instead, as for a
//! brand-new consumer group.

use crate::state::{Rules, StartPoint};
use analytics_model::hour::{Millis, HOUR_MS};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

mod changelog_io;

pub use changelog_io::{ChangelogIo, Folded};

const METADATA_PREFIX: &str = "w=";

/// Why a restore could not finish; the processor retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog or events topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("fencing partition {partition}: {source}")]
    Fence {
        partition: i32,
        source: rdkafka::error::KafkaError,
    },
    #[error("changelog read stalled; partitions {0:?} incomplete")]
    Stalled(Vec<i32>),
}

/// Commit metadata carrying the partition watermark.
pub fn encode_metadata(watermark: Millis) -> String {
    format!("{METADATA_PREFIX}{watermark}")
}

pub fn decode_metadata(metadata: &str) -> Option<Millis> {
    metadata
        .strip_prefix(METADATA_PREFIX)?
        .parse()
        .ok()
        .map(Millis)
}

/// Earliest receipt time whose events can still matter, given watermark `w`.
pub fn replay_from_time(rules: &Rules, w: Millis) -> Millis {
    w.plus(-rules.max_event_age_ms)
        .plus(-HOUR_MS)
        .plus(-2 * rules.max_future_skew_ms)
}

/// Pure part of the decision: given the committed offset and watermark (if any), the offset
/// `offsets_for_times` found for the replay time (`None`: no record that recent), and the low
/// and high watermarks of the partition.
pub fn decide(
    rules: &Rules,
    committed: Option<(i64, Option<Millis>)>,
    now: Millis,
    offset_for_time: impl FnOnce(Millis) -> Option<i64>,
    high_watermark: i64,
) -> StartPoint {
    match committed {
        // Committed, but without a watermark (another tool committed it): replay everything
        // still in the log; nothing before `c` is republished.
        Some((c, None)) => StartPoint {
            offset: 0,
            resume_from: c,
            complete_from_hour: Millis::MIN,
        },
        Some((c, Some(w))) => {
            let t = replay_from_time(rules, w);
            let offset = offset_for_time(t).map_or(c, |o| o.min(c));
            StartPoint {
                offset,
                resume_from: c,
                complete_from_hour: t.plus(rules.max_future_skew_ms),
            }
        }
        None => {
            let t = replay_from_time(rules, now);
            StartPoint {
                offset: offset_for_time(t).unwrap_or(high_watermark),
                resume_from: 0,
                complete_from_hour: t.plus(rules.max_future_skew_ms),
            }
        }
    }
}

/// Computes the start point of `partition` by asking the broker (blocking).
pub fn start_point<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    rules: &Rules,
    timeout: Duration,
) -> KafkaResult<StartPoint> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let committed = committed
        .find_partition(topic, partition)
        .and_then(|e| match e.offset() {
            Offset::Offset(c) if c >= 0 => Some((c, decode_metadata(e.metadata()))),
            _ => None,
        });
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    let mut lookup_error = None;
    let offset_for_time = |t: Millis| -> Option<i64> {
        let mut q = TopicPartitionList::new();
        q.add_partition_offset(topic, partition, Offset::Offset(t.0.max(0)))
            .expect("valid offset");
        match consumer.offsets_for_times(q, timeout) {
            Ok(r) => match r.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => Some(o),
                _ => None,
            },
            Err(e) => {
                lookup_error = Some(e);
                None
            }
        }
    };
    let sp = decide(
        rules,
        committed,
        analytics_model::clock::now(),
        offset_for_time,
        high,
    );
    if let Some(e) = lookup_error {
        return Err(e);
    }
    Ok(StartPoint {
        offset: sp.offset.max(low),
        ..sp
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules::new(24 * HOUR_MS, 300_000, 24 * HOUR_MS);
    const NOW: Millis = Millis(1_700_000_000_000);

    #[test]
    fn metadata_round_trip() {
        assert_eq!(decode_metadata(&encode_metadata(NOW)), Some(NOW));
        assert_eq!(decode_metadata(""), None);
        assert_eq!(decode_metadata("w=x"), None);
    }

    #[test]
    fn fresh_group_replays_the_window_by_wall_clock() {
        let mut asked = None;
        let sp = decide(
            &RULES,
            None,
            NOW,
            |t| {
                asked = Some(t);
                Some(42)
            },
            1000,
        );
        let t = NOW.plus(-25 * HOUR_MS - 600_000);
        assert_eq!(asked, Some(t));
        assert_eq!(
            sp,
            StartPoint {
                offset: 42,
                resume_from: 0,
                complete_from_hour: t.plus(300_000)
            }
        );
        // nothing recent: start at the end
        let sp = decide(&RULES, None, NOW, |_| None, 1000);
        assert_eq!(sp.offset, 1000);
    }

    #[test]
    fn committed_partition_replays_from_its_watermark_not_the_clock() {
        let w = NOW.plus(-3 * 24 * HOUR_MS); // processor down for three days
        let mut asked = None;
        let sp = decide(
            &RULES,
            Some((500, Some(w))),
            NOW,
            |t| {
                asked = Some(t);
                Some(100)
            },
            9000,
        );
        assert_eq!(asked, Some(replay_from_time(&RULES, w)));
        assert_eq!(sp.offset, 100);
        assert_eq!(sp.resume_from, 500);
        // the replay never starts after the committed offset
        let sp = decide(&RULES, Some((50, Some(w))), NOW, |_| Some(100), 9000);
        assert_eq!(sp.offset, 50);
        let sp = decide(&RULES, Some((50, Some(w))), NOW, |_| None, 9000);
        assert_eq!(sp.offset, 50);
    }

    #[test]
    fn every_hour_counted_after_the_commit_is_complete() {
        // An hour that can still be counted at watermark >= w must start at or after
        // complete_from_hour.
        let w = NOW;
        let sp = decide(&RULES, Some((10, Some(w))), NOW, |_| Some(0), 100);
        let mut hour = w.hour();
        while !RULES.closed(hour, w) {
            assert!(
                hour.start() >= sp.complete_from_hour,
                "hour {hour} would be incomplete"
            );
            hour = hour.plus_hours(-1);
        }
    }

    #[test]
    fn commit_without_watermark_replays_everything() {
        let sp = decide(&RULES, Some((77, None)), NOW, |_| panic!("not needed"), 100);
        assert_eq!(
            sp,
            StartPoint {
                offset: 0,
                resume_from: 77,
                complete_from_hour: Millis::MIN
            }
        );
    }
}
