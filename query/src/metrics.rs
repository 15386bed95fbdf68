//! The query service's metrics (names declared here only).

use analytics_http::HttpMetrics;
use analytics_runtime::metrics::{
    counter, counter_vec, histogram, hop_seconds, init_label_values, Hop, LabelValue,
};
use prometheus::{Histogram, IntCounter, IntCounterVec};

/// The store an answer came from: the `tier` label of `query_served_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The in-process cache.
    Memory,
    Redis,
    Postgres,
    /// Neither store holds the hour: zeros.
    Empty,
}

impl LabelValue for Tier {
    const ALL: &'static [Self] = &[Self::Memory, Self::Redis, Self::Postgres, Self::Empty];
    fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Postgres => "postgres",
            Self::Empty => "empty",
        }
    }
}

/// The service's metric families; `default()` registers them in a registry of their own,
/// which `http` holds and `/metrics` renders.
#[derive(Clone)]
pub struct Metrics {
    pub http: HttpMetrics,
    /// Answers by the tier that served them: memory, redis, postgres.
    pub served: IntCounterVec,
    /// `served{tier="memory"}`, resolved once (the hot path).
    pub served_memory: IntCounter,
    /// In-process cache misses.
    pub cache_misses: IntCounter,
    /// Redis errors that fell back to PostgreSQL.
    pub fallbacks: IntCounter,
    /// Requests that waited for another request's lookup of the same hour.
    pub coalesced: IntCounter,
    /// Age of the newest partial included in an answer.
    pub served_age: Histogram,
    /// [`Hop::Served`]: receipt of an hour's newest event → the first answer that includes
    /// it (an hour's answer growing newer, as this instance serves it).
    pub hop_served: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let r = analytics_runtime::metrics::new_registry("query");
        let served = counter_vec(
            &r,
            "query_served_total",
            "Answers by the tier that served them (memory, redis, postgres, empty).",
            &["tier"],
        );
        init_label_values::<Tier>(&served);
        Self {
            http: HttpMetrics::new(&r),
            served_memory: served.with_label_values(&[Tier::Memory.as_str()]),
            served,
            cache_misses: counter(&r, "query_cache_misses_total", "In-process cache misses (a lookup in Redis or PostgreSQL followed)."),
            fallbacks: counter(&r, "query_redis_fallbacks_total", "Lookups answered from PostgreSQL because Redis failed."),
            coalesced: counter(&r, "query_coalesced_total", "Requests that shared another request's lookup of the same hour."),
            hop_served: hop_seconds(&r, &[Hop::Served]).remove(0),
            served_age: histogram(
                &r,
                "query_served_age_seconds",
                "Time since the newest event included in an answer was received (freshness of what was served).",
                &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0],
            ),
        }
    }
}

analytics_runtime::metric_families_test!(
    Metrics::default(),
    &[
        "analytics_query_served_total",
        "analytics_query_cache_misses_total",
        "analytics_query_redis_fallbacks_total",
        "analytics_query_coalesced_total",
        "analytics_query_served_age_seconds",
    ]
);
