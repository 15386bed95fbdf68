//! The metric families every Kafka client of a service shares, named after the service.

use analytics_runtime::metrics::{counter, counter_vec, init_labels};
use prometheus::{IntCounter, IntCounterVec, Registry};

/// `{service}_offset_gaps_total{outcome}`: records found beyond the expected offset, by what
/// was done (`refetched`: sought back; `skipped`: taken as a real gap). See [`crate::gaps`].
pub fn offset_gaps(registry: &Registry, service: &str) -> IntCounterVec {
    let c = counter_vec(
        registry,
        &format!("{service}_offset_gaps_total"),
        "Records consumed beyond the next expected offset, by outcome (refetched: sought back and read again; skipped: taken as a real gap).",
        &["outcome"],
    );
    init_labels(&c, &["refetched", "skipped"]);
    c
}

/// `{prefix}producer_replacements_total`: producers replaced after a fatal error
/// ([`crate::producer::Recovering`]).
pub fn producer_replacements(registry: &Registry, prefix: &str) -> IntCounter {
    counter(
        registry,
        &format!("{prefix}producer_replacements_total"),
        "Kafka producers replaced by a new instance after the broker rejected their idempotence state (fenced, fatal error).",
    )
}
