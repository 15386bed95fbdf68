//! The materializer's metrics (names declared here only).

use analytics_http::HttpMetrics;
use analytics_runtime::metrics::{
    counter, counter_vec, gauge, gauge_vec, histogram, histogram_vec, hop_seconds,
    init_label_values, Hop, LabelValue, LATENCY_BUCKETS,
};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

/// A store the materializer writes: the `store` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Postgres,
    Redis,
}

impl LabelValue for Store {
    const ALL: &'static [Self] = &[Self::Postgres, Self::Redis];
    fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        }
    }
}

/// What PostgreSQL's offset guard did with a partial: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Newer than the stored one: written.
    Applied,
    /// Not newer: left as it was.
    Skipped,
}

impl LabelValue for Outcome {
    const ALL: &'static [Self] = &[Self::Applied, Self::Skipped];
    fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Skipped => "skipped",
        }
    }
}

/// The service's metric families; `default()` registers them in a registry of their own,
/// which `http` holds and `/metrics` renders.
#[derive(Clone)]
pub struct Metrics {
    pub http: HttpMetrics,
    /// Partials offered to the stores, by outcome (applied / skipped by the offset guard).
    pub partials: IntCounterVec,
    pub undecodable: IntCounter,
    pub store_latency: HistogramVec,
    pub store_errors: IntCounterVec,
    pub batch_size: Histogram,
    pub redis_rebuilds: IntCounter,
    pub redis_pending_hours: IntGauge,
    pub freshness: Histogram,
    /// [`Hop::Stored`]: the same time as `freshness`, as one of the pipeline's hops.
    pub hop_stored: Histogram,
    pub lag: IntGaugeVec,
    pub offset_gaps: IntCounterVec,
    /// Changelog records applied to membership.
    pub membership_records: IntCounter,
    /// Changelog records found applied already (a replay, or another instance).
    pub membership_records_skipped: IntCounter,
    pub membership_gaps: IntCounter,
}

/// Buckets for end-to-end freshness, 10 ms to 5 min.
pub const FRESHNESS_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

impl Default for Metrics {
    fn default() -> Self {
        let r = analytics_runtime::metrics::new_registry("materializer");
        let m = Self {
            http: HttpMetrics::new(&r),
            partials: counter_vec(
                &r,
                "materializer_partials_total",
                "Partials written to PostgreSQL, by outcome: applied, or skipped by the offset guard (not newer than the stored one).",
                &["outcome"],
            ),
            undecodable: counter(&r, "materializer_undecodable_total", "Records on the hourly topic that are not partials (skipped)."),
            store_latency: histogram_vec(
                &r,
                "materializer_store_write_duration_seconds",
                "Write latency per batch, by store (postgres, redis).",
                &["store"],
                LATENCY_BUCKETS,
            ),
            store_errors: counter_vec(&r, "materializer_store_errors_total", "Failed writes, by store (postgres, redis); retried.", &["store"]),
            batch_size: histogram(
                &r,
                "materializer_batch_size",
                "Partials per batch after deduplication.",
                &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0],
            ),
            redis_rebuilds: counter(&r, "materializer_redis_rebuilds_total", "Hour keys rebuilt whole from PostgreSQL because they were missing in Redis."),
            redis_pending_hours: gauge(&r, "materializer_redis_pending_hours", "Hours written to PostgreSQL whose Redis update is still pending (Redis failing)."),
            freshness: histogram(
                &r,
                "end_to_end_freshness_seconds",
                "Time from the receipt of the newest event in a partial to the partial being readable in Redis.",
                FRESHNESS_BUCKETS,
            ),
            hop_stored: hop_seconds(&r, &[Hop::Stored]).remove(0),
            lag: gauge_vec(
                &r,
                "materializer_consumer_lag",
                "Partials behind the end of the hourly topic, per partition.",
                &["partition"],
            ),
            offset_gaps: analytics_kafka::metrics::offset_gaps(&r, "materializer"),
            membership_records: counter(&r, "materializer_membership_records_total", "Changelog records applied to membership (the users of each hour)."),
            membership_records_skipped: counter(&r, "materializer_membership_records_skipped_total", "Changelog records already applied to membership (a replay, or another instance): skipped."),
            membership_gaps: counter(&r, "materializer_membership_gaps_total", "Times changelog records were deleted before membership read them (the materializer was stopped longer than the changelog's retention)."),
        };
        init_label_values::<Outcome>(&m.partials);
        init_label_values::<Store>(&m.store_errors);
        for store in Store::ALL {
            m.store_latency.with_label_values(&[store.as_str()]);
        }
        m
    }
}

analytics_runtime::metric_families_test!(
    Metrics::default(),
    &[
        "analytics_materializer_partials_total",
        "analytics_materializer_store_write_duration_seconds",
        "analytics_materializer_store_errors_total",
        "analytics_end_to_end_freshness_seconds",
        "analytics_materializer_redis_pending_hours",
        "analytics_materializer_offset_gaps_total",
        "analytics_materializer_membership_records_total",
        "analytics_materializer_membership_gaps_total",
    ]
);
