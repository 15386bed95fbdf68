//! Applies batches of partials to the read model: PostgreSQL first, then Redis, both with the
//! offset guard. Redis is never ahead of PostgreSQL, and an hour's Redis key is only created
//! whole (from PostgreSQL), never from the few partitions that just changed.

use crate::metrics::{Metrics, Outcome, Store};
use analytics_model::event::Partial;
use analytics_model::hour::{HourStart, Millis};
use analytics_runtime::metrics::LabelValue;
use analytics_store::pg::{PgError, PgStore};
use analytics_store::redis_store::{MergeMode, MergeOutcome, RedisStore};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redis expiry policy.
#[derive(Debug, Clone, Copy)]
pub struct TtlPolicy {
    /// Keys live until at least this long after their hour ends.
    pub hot_grace: Duration,
    /// Minimum lifetime of any key written (older hours).
    pub cold_ttl: Duration,
}

impl TtlPolicy {
    /// Minimum TTL for the key of `hour` at `now`.
    pub fn ttl(&self, hour: HourStart, now: Millis) -> Duration {
        let until = hour
            .end()
            .plus(self.hot_grace.as_millis() as i64)
            .since(now);
        Duration::from_millis(until.max(0) as u64).max(self.cold_ttl)
    }
}

pub struct Sink {
    pub pg: Arc<PgStore>,
    pub redis: Arc<RedisStore>,
    pub ttl: TtlPolicy,
    pub metrics: Metrics,
    /// Hours whose Redis update failed; retried on every batch. Offsets are not committed
    /// while this is non-empty, so a crash replays them.
    pending: BTreeSet<HourStart>,
}

impl Sink {
    pub fn new(pg: Arc<PgStore>, redis: Arc<RedisStore>, ttl: TtlPolicy, metrics: Metrics) -> Self {
        Self {
            pg,
            redis,
            ttl,
            metrics,
            pending: BTreeSet::new(),
        }
    }

    /// Writes the batch (deduplicated) to PostgreSQL.
    pub async fn write_postgres(&self, batch: &[Partial]) -> Result<(), PgError> {
        let started = Instant::now();
        match self.pg.upsert(batch).await {
            Ok(changed) => {
                self.metrics
                    .store_latency
                    .with_label_values(&[Store::Postgres.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                let skipped = batch.len() as u64 - changed.min(batch.len() as u64);
                self.metrics
                    .partials
                    .with_label_values(&[Outcome::Applied.as_str()])
                    .inc_by(changed);
                self.metrics
                    .partials
                    .with_label_values(&[Outcome::Skipped.as_str()])
                    .inc_by(skipped);
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .store_errors
                    .with_label_values(&[Store::Postgres.as_str()])
                    .inc();
                Err(e)
            }
        }
    }

    /// Brings Redis up to date for the batch's hours and any pending ones. Returns true when
    /// nothing is pending any more (the caller may commit offsets).
    pub async fn write_redis(&mut self, batch: &[Partial]) -> bool {
        let started = Instant::now();
        // `None`: resynchronise the whole hour from PostgreSQL, which holds every partial
        // (it is written first). A pending hour is always resynchronised whole, even if this
        // batch also has partials for it: the failed write may have covered other partitions.
        let mut by_hour: BTreeMap<HourStart, Option<Vec<Partial>>> = BTreeMap::new();
        for p in batch {
            by_hour
                .entry(p.hour)
                .or_insert_with(|| Some(Vec::new()))
                .as_mut()
                .expect("batch entries hold partials")
                .push(*p);
        }
        for hour in std::mem::take(&mut self.pending) {
            by_hour.insert(hour, None);
        }
        let now = analytics_model::clock::now();
        for (hour, partials) in by_hour {
            match self.apply_hour(hour, partials.as_deref(), now).await {
                Ok(()) => {
                    for p in partials
                        .iter()
                        .flatten()
                        .filter(|p| p.newest_received_at.0 > 0)
                    {
                        let age_ms = analytics_model::clock::now()
                            .since(p.newest_received_at)
                            .max(0);
                        self.metrics.freshness.observe(age_ms as f64 / 1000.0);
                        self.metrics.hop_stored.observe(age_ms as f64 / 1000.0);
                    }
                }
                Err(e) => {
                    tracing::warn!(%hour, error = %e, "redis update failed; will retry");
                    self.metrics
                        .store_errors
                        .with_label_values(&[Store::Redis.as_str()])
                        .inc();
                    self.pending.insert(hour);
                }
            }
        }
        self.metrics
            .redis_pending_hours
            .set(self.pending.len() as i64);
        self.metrics
            .store_latency
            .with_label_values(&[Store::Redis.as_str()])
            .observe(started.elapsed().as_secs_f64());
        self.pending.is_empty()
    }

    /// Applies `partials` to the hour's key if it exists; rebuilds a missing key whole from
    /// PostgreSQL. With `None`, applies the whole hour from PostgreSQL.
    async fn apply_hour(
        &self,
        hour: HourStart,
        partials: Option<&[Partial]>,
        now: Millis,
    ) -> anyhow::Result<()> {
        let ttl = self.ttl.ttl(hour, now);
        let all;
        let (partials, resync) = match partials {
            Some(p) => (p, false),
            None => {
                all = self.pg.partials(hour).await?;
                (all.as_slice(), true)
            }
        };
        if partials.is_empty() {
            return Ok(());
        }
        if self
            .redis
            .merge(hour, partials, MergeMode::Update, ttl)
            .await?
            == MergeOutcome::Missing
        {
            let whole = if resync {
                partials.to_vec()
            } else {
                self.metrics.redis_rebuilds.inc();
                self.pg.partials(hour).await?
            };
            self.redis
                .merge(hour, &whole, MergeMode::Create, ttl)
                .await?;
        }
        Ok(())
    }

    pub fn pending_hours(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use analytics_model::hour::HOUR_MS;

    #[test]
    fn hot_hours_live_two_hours_past_their_end_and_old_ones_get_the_short_ttl() {
        let policy = TtlPolicy {
            hot_grace: Duration::from_secs(7200),
            cold_ttl: Duration::from_secs(600),
        };
        let hour = HourStart::new(100 * HOUR_MS).unwrap();
        let at = |ms| hour.start().plus(ms);
        // current hour, 10 minutes in: 50 min left + 2 h
        assert_eq!(
            policy.ttl(hour, at(600_000)),
            Duration::from_secs(50 * 60 + 7200)
        );
        // previous hour, just ended
        assert_eq!(policy.ttl(hour, at(HOUR_MS)), Duration::from_secs(7200));
        // five hours back: cold
        assert_eq!(policy.ttl(hour, at(5 * HOUR_MS)), Duration::from_secs(600));
    }
}
