//! The processor's metrics (names declared here only).

use analytics_http::HttpMetrics;
use analytics_model::event::RecordError;
use analytics_runtime::metrics::{
    counter, counter_vec, gauge_vec, histogram, hop_seconds, init_label_values, init_labels, Hop,
    LabelValue, LATENCY_BUCKETS,
};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGaugeVec};

/// Why a record went to the dead-letter topic: its `reason` field and the label of
/// `processor_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// An event for an hour closed by the partition's watermark.
    HourClosed,
    /// A record that is not an event.
    Undecodable,
    /// An event of a newer format than this build reads.
    UnknownFormat,
}

impl LabelValue for DeadLetterReason {
    const ALL: &'static [Self] = &[Self::HourClosed, Self::Undecodable, Self::UnknownFormat];
    fn as_str(self) -> &'static str {
        match self {
            Self::HourClosed => "hour_closed",
            Self::Undecodable => "undecodable",
            Self::UnknownFormat => "unknown_format",
        }
    }
}

impl From<&RecordError> for DeadLetterReason {
    fn from(e: &RecordError) -> Self {
        match e {
            RecordError::UnknownFormat(_) => Self::UnknownFormat,
            RecordError::Invalid(_) | RecordError::Malformed(_) => Self::Undecodable,
        }
    }
}

/// The service's metric families; `default()` registers them in a registry of their own,
/// which `http` holds and `/metrics` renders.
#[derive(Clone)]
pub struct Metrics {
    pub http: HttpMetrics,
    pub consumed: IntCounter,
    pub late: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub partials_published: IntCounter,
    pub flush_duration: Histogram,
    pub restore_duration: Histogram,
    pub open_hours: IntGaugeVec,
    pub tracked_users: IntGaugeVec,
    pub remembered_ids: IntGaugeVec,
    pub duplicates: IntCounter,
    pub lag: IntGaugeVec,
    pub restore_records: IntGaugeVec,
    pub restore_bytes: IntGaugeVec,
    pub changelog_written_bytes: IntCounter,
    pub offset_gaps: IntCounterVec,
    pub producer_replacements: IntCounter,
    /// [`Hop::Consumed`]: receipt → read here, for one live event in [`CONSUMED_SAMPLE`].
    pub hop_consumed: Histogram,
    /// [`Hop::Published`]: receipt of a partial's newest event → the partial acknowledged.
    pub hop_published: Histogram,
}

/// One live event in this many is timed for [`Hop::Consumed`] (a clock read and a histogram
/// update for every event would cost the loop more than the rest of an event's work).
pub const CONSUMED_SAMPLE: u64 = 64;

impl Default for Metrics {
    fn default() -> Self {
        let r = analytics_runtime::metrics::new_registry("processor");
        let [hop_consumed, hop_published]: [Histogram; 2] =
            hop_seconds(&r, &[Hop::Consumed, Hop::Published])
                .try_into()
                .expect("two hops");
        let m = Self {
            hop_consumed,
            hop_published,
            http: HttpMetrics::new(&r),
            consumed: counter(&r, "processor_events_consumed_total", "Events read from the events topic (replays included)."),
            late: counter_vec(
                &r,
                "processor_late_events_total",
                "Events counted for an hour earlier than the hour they were received in, by how many hours late (bucketed).",
                &["hours_late"],
            ),
            dead_lettered: counter_vec(
                &r,
                "processor_dead_lettered_total",
                "Events sent to the dead-letter topic, by reason (hour_closed, undecodable, unknown_format).",
                &["reason"],
            ),
            partials_published: counter(&r, "processor_partials_published_total", "Partials acknowledged by the broker on the hourly topic."),
            flush_duration: histogram(&r, "processor_flush_duration_seconds", "Time to publish changed partials and commit offsets.", LATENCY_BUCKETS),
            restore_duration: histogram(
                &r,
                "processor_restore_duration_seconds",
                "Time from a partition's assignment until its state is restored.",
                &[0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0],
            ),
            open_hours: gauge_vec(&r, "processor_open_hours", "Hours held in memory, per source partition.", &["partition"]),
            tracked_users: gauge_vec(&r, "processor_tracked_users", "Distinct (hour, user) pairs held in memory, per source partition.", &["partition"]),
            remembered_ids: gauge_vec(&r, "processor_remembered_ids", "(user, id) pairs remembered for deduplication (the dedup window), per source partition.", &["partition"]),
            duplicates: counter(&r, "processor_duplicate_events_total", "Events not counted because their (user, id) was seen within the dedup window."),
            lag: gauge_vec(&r, "processor_consumer_lag", "Events behind the end of the partition, per source partition.", &["partition"]),
            restore_records: gauge_vec(&r, "processor_restore_changelog_records", "Changelog records read by the last restore of each partition.", &["partition"]),
            restore_bytes: gauge_vec(&r, "processor_restore_changelog_bytes", "Changelog bytes read by the last restore of each partition (the changelog's size).", &["partition"]),
            changelog_written_bytes: counter(&r, "processor_changelog_written_bytes_total", "Bytes appended to the state changelog (deltas and checkpoints)."),
            offset_gaps: analytics_kafka::metrics::offset_gaps(&r, "processor"),
            producer_replacements: analytics_kafka::metrics::producer_replacements(&r, "processor_"),
        };
        init_label_values::<DeadLetterReason>(&m.dead_lettered);
        init_labels(&m.late, &["1", "2", "3-5", "6-11", "12-23", "24+"]);
        m
    }
}

/// Bounded label for how late an event is, in whole hours.
pub fn lateness_bucket(hours: i64) -> &'static str {
    match hours {
        i64::MIN..=0 => "0",
        1 => "1",
        2 => "2",
        3..=5 => "3-5",
        6..=11 => "6-11",
        12..=23 => "12-23",
        _ => "24+",
    }
}

analytics_runtime::metric_families_test!(
    Metrics::default(),
    &[
        "analytics_processor_events_consumed_total",
        "analytics_processor_late_events_total",
        "analytics_processor_dead_lettered_total",
        "analytics_processor_flush_duration_seconds",
        "analytics_processor_restore_duration_seconds",
        "analytics_processor_offset_gaps_total",
    ]
);
