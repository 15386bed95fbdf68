//! Reading an hour's totals: in-process cache, then Redis, then PostgreSQL (written back to
//! Redis whole, with a short TTL). Concurrent misses for the same hour share one lookup.
//!
//! Reads are monotonic per instance: true totals never decrease, so a fresh lookup is
//! merged with what this instance served before (component-wise maximum). That hides the
//! short window in which Redis may lag PostgreSQL after a Redis outage.
//!
//! The cache is an [`lru::LruCache`] of at most [`CACHE_CAPACITY`] hours, read with `peek`
//! (so reads share a read lock) and refreshed with `put`: the hour evicted first is the one
//! refreshed longest ago. The coalescing of misses is hand-written, not `moka`'s, for two
//! reasons: `moka` coalesces the loading of *absent* keys (`get_with`), while almost every
//! miss here is a *stale* entry of the current hour being refreshed (every 100 ms by
//! default), and the refresh must see the stale value to merge with it; its `and_compute_with`
//! sees the old value but serialises concurrent callers instead of sharing one lookup, so 64
//! clients asking for the current hour would make 64 lookups in a row.

use crate::metrics::Metrics;
use crate::metrics::Tier;
use analytics_model::event::{HourTotals, Partial};
use analytics_model::hour::{HourStart, Millis};
use analytics_runtime::metrics::{observe_since, LabelValue};
use analytics_store::pg::PgStore;
use analytics_store::redis_store::{MergeMode, RedisStore};
use lru::LruCache;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error, Clone)]
pub enum LookupError {
    #[error("both Redis and PostgreSQL are unavailable")]
    Unavailable,
}

/// Cache freshness settings.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// How long an answer for the current hour is reused.
    pub current_hour: Duration,
    /// How long an answer for other hours is reused.
    pub other_hours: Duration,
    /// TTL of a Redis key rebuilt from PostgreSQL by a read.
    pub backfill_ttl: Duration,
}

#[derive(Clone, Copy)]
struct Entry {
    totals: HourTotals,
    newest_received_at: Millis,
    /// When it was fetched, wall clock in ms: the clock read that every answer needs anyway
    /// (for the current hour) also tells its age. A clock stepped back makes entries stale,
    /// never fresh for longer.
    fetched_ms: i64,
}

impl Entry {
    fn fresh(&self, now_ms: i64, freshness: Duration) -> bool {
        let age = now_ms - self.fetched_ms;
        age >= 0 && (age as u128) < freshness.as_millis()
    }
}

type Waiters = Vec<oneshot::Sender<Result<Entry, LookupError>>>;

pub struct Lookup {
    redis: Arc<RedisStore>,
    pg: Arc<PgStore>,
    policy: CachePolicy,
    metrics: Metrics,
    cache: RwLock<LruCache<HourStart, Entry>>,
    inflight: Mutex<HashMap<HourStart, Waiters>>,
}

/// Most hours kept in the in-process cache; the one refreshed longest ago goes first.
pub const CACHE_CAPACITY: NonZeroUsize = NonZeroUsize::new(4096).expect("not zero");

impl Lookup {
    pub fn new(
        redis: Arc<RedisStore>,
        pg: Arc<PgStore>,
        policy: CachePolicy,
        metrics: Metrics,
    ) -> Self {
        Self {
            redis,
            pg,
            policy,
            metrics,
            cache: RwLock::new(LruCache::new(CACHE_CAPACITY)),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Totals of `hour`.
    pub async fn totals(&self, hour: HourStart) -> Result<HourTotals, LookupError> {
        let now = analytics_model::clock::now_ms();
        let freshness = if hour == Millis(now).hour() {
            self.policy.current_hour
        } else {
            self.policy.other_hours
        };
        let cached = self
            .cache
            .read()
            .expect("not poisoned")
            .peek(&hour)
            .copied();
        if let Some(e) = cached {
            if e.fresh(now, freshness) {
                self.metrics.served_memory.inc();
                self.observe_age(&e, now);
                return Ok(e.totals);
            }
        }
        self.metrics.cache_misses.inc();
        // Boxed: the lookup's future holds the Redis and PostgreSQL clients' futures (some
        // 4 KB), and inline it would make every request's future that large, copied and
        // allocated on every request, cache hits included.
        let entry = Box::pin(self.coalesced(hour)).await?;
        self.observe_age(&entry, now);
        Ok(entry.totals)
    }

    fn observe_age(&self, e: &Entry, now: i64) {
        if e.newest_received_at.0 > 0 {
            let age = Millis(now).since(e.newest_received_at);
            self.metrics.served_age.observe(age.max(0) as f64 / 1000.0);
        }
    }

    /// One lookup per hour at a time; other callers wait for its result.
    async fn coalesced(&self, hour: HourStart) -> Result<Entry, LookupError> {
        let rx = {
            let mut inflight = self.inflight.lock().expect("not poisoned");
            match inflight.get_mut(&hour) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    inflight.insert(hour, Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = rx {
            self.metrics.coalesced.inc();
            return match rx.await {
                Ok(result) => result,
                // The leading request was dropped mid-lookup: look up for ourselves.
                Err(_) => self.fetch(hour).await,
            };
        }
        // This caller leads; make sure waiters are answered even if it is cancelled.
        let guard = LeaderGuard {
            lookup: self,
            hour,
            done: false,
        };
        let result = self.fetch(hour).await;
        guard.finish(result.clone());
        result
    }

    async fn fetch(&self, hour: HourStart) -> Result<Entry, LookupError> {
        let (partials, tier) = match self.redis.partials(hour).await {
            Ok(Some(ps)) => (ps, Tier::Redis),
            Ok(None) => match self.pg.partials(hour).await {
                Ok(ps) if ps.is_empty() => (ps, Tier::Empty),
                Ok(ps) => {
                    self.backfill(hour, &ps);
                    (ps, Tier::Postgres)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "postgres lookup failed after a redis miss");
                    return Err(LookupError::Unavailable);
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "redis lookup failed; falling back to postgres");
                self.metrics.fallbacks.inc();
                match self.pg.partials(hour).await {
                    Ok(ps) => (ps, Tier::Postgres),
                    Err(e2) => {
                        tracing::warn!(redis = %e, postgres = %e2, "no store answered");
                        return Err(LookupError::Unavailable);
                    }
                }
            }
        };
        Ok(self.settle(hour, &partials, tier))
    }

    /// Sums an hour's partials into the cache (never lower than before) and counts the tier.
    fn settle(&self, hour: HourStart, partials: &[Partial], tier: Tier) -> Entry {
        self.metrics
            .served
            .with_label_values(&[tier.as_str()])
            .inc();
        let mut totals = HourTotals::default();
        partials.iter().for_each(|p| totals.add(p));
        let newest = partials
            .iter()
            .map(|p| p.newest_received_at)
            .max()
            .unwrap_or_default();
        self.remember(hour, totals, newest)
    }

    /// Totals of every hour of `hours` (hour starts), with the same cache rules and sources
    /// as [`Lookup::totals`]: fresh cache entries first, then the rest from Redis in one
    /// pipelined round trip, then whatever Redis lacks from PostgreSQL in one query.
    pub async fn totals_many(&self, hours: &[HourStart]) -> Result<Vec<HourTotals>, LookupError> {
        let mut out = self.cached_many(hours);
        let missing: Vec<usize> = (0..hours.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            self.metrics.cache_misses.inc_by(missing.len() as u64);
            let wanted: Vec<HourStart> = missing.iter().map(|&i| hours[i]).collect();
            let fetched = self.fetch_many(&wanted).await?;
            for (i, totals) in missing.into_iter().zip(fetched) {
                out[i] = Some(totals);
            }
        }
        Ok(out
            .into_iter()
            .map(|t| t.expect("every hour answered"))
            .collect())
    }

    /// The fresh cache entry of each of `hours`, `None` where there is none.
    fn cached_many(&self, hours: &[HourStart]) -> Vec<Option<HourTotals>> {
        let now = analytics_model::clock::now_ms();
        let current = Millis(now).hour();
        let cache = self.cache.read().expect("not poisoned");
        hours
            .iter()
            .map(|hour| {
                let freshness = if *hour == current {
                    self.policy.current_hour
                } else {
                    self.policy.other_hours
                };
                let e = cache.peek(hour).filter(|e| e.fresh(now, freshness))?;
                self.metrics.served_memory.inc();
                Some(e.totals)
            })
            .collect()
    }

    /// The totals of `hours` from Redis, and from PostgreSQL where Redis has no key (written
    /// back to Redis when Redis answered), each remembered in the cache.
    async fn fetch_many(&self, hours: &[HourStart]) -> Result<Vec<HourTotals>, LookupError> {
        let (from_redis, redis_answered) = match self.redis.partials_many(hours).await {
            Ok(replies) => (replies, true),
            Err(e) => {
                tracing::debug!(error = %e, "redis range lookup failed; falling back to postgres");
                self.metrics.fallbacks.inc();
                (vec![None; hours.len()], false)
            }
        };
        let need_pg: Vec<HourStart> = hours
            .iter()
            .zip(&from_redis)
            .filter(|(_, r)| r.is_none())
            .map(|(&h, _)| h)
            .collect();
        let mut from_pg = self.pg.partials_many(&need_pg).await.map_err(|e| {
            tracing::warn!(error = %e, "postgres range lookup failed");
            LookupError::Unavailable
        })?;
        let settled = hours.iter().zip(from_redis).map(|(&hour, redis)| {
            let entry = match redis {
                Some(ps) => self.settle(hour, &ps, Tier::Redis),
                None => {
                    let ps = from_pg.remove(&hour).unwrap_or_default();
                    if ps.is_empty() {
                        self.settle(hour, &ps, Tier::Empty)
                    } else {
                        if redis_answered {
                            self.backfill(hour, &ps);
                        }
                        self.settle(hour, &ps, Tier::Postgres)
                    }
                }
            };
            entry.totals
        });
        Ok(settled.collect())
    }

    /// Writes a PostgreSQL result back to Redis (whole hour, short TTL), off the request path.
    fn backfill(&self, hour: HourStart, partials: &[Partial]) {
        let redis = self.redis.clone();
        let partials = partials.to_vec();
        let ttl = self.policy.backfill_ttl;
        tokio::spawn(async move {
            if let Err(e) = redis.merge(hour, &partials, MergeMode::Create, ttl).await {
                tracing::debug!(%hour, error = %e, "redis backfill failed");
            }
        });
    }

    /// Stores a fresh result, never lower than what was served before.
    fn remember(&self, hour: HourStart, fresh: HourTotals, newest: Millis) -> Entry {
        let fetched_ms = analytics_model::clock::now_ms();
        let mut cache = self.cache.write().expect("not poisoned");
        let entry = match cache.peek(&hour) {
            Some(prev) => {
                if newest > prev.newest_received_at {
                    // The first answer with this event: the last hop of its way.
                    observe_since(&self.metrics.hop_served, newest.0, fetched_ms);
                }
                Entry {
                    totals: max_totals(prev.totals, fresh),
                    newest_received_at: prev.newest_received_at.max(newest),
                    fetched_ms,
                }
            }
            None => Entry {
                totals: fresh,
                newest_received_at: newest,
                fetched_ms,
            },
        };
        // `put` makes the hour the most recently refreshed and, when full, evicts the least.
        cache.put(hour, entry);
        entry
    }
}

/// Component-wise maximum: each total only ever grows.
pub fn max_totals(a: HourTotals, b: HourTotals) -> HourTotals {
    HourTotals {
        unique_users: a.unique_users.max(b.unique_users),
        clicks: a.clicks.max(b.clicks),
        impressions: a.impressions.max(b.impressions),
    }
}

struct LeaderGuard<'a> {
    lookup: &'a Lookup,
    hour: HourStart,
    done: bool,
}

impl LeaderGuard<'_> {
    fn finish(mut self, result: Result<Entry, LookupError>) {
        self.answer(result);
        self.done = true;
    }

    fn answer(&self, result: Result<Entry, LookupError>) {
        let waiters = self
            .lookup
            .inflight
            .lock()
            .expect("not poisoned")
            .remove(&self.hour)
            .unwrap_or_default();
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            // The leading request was dropped mid-lookup: dropping the senders tells the
            // waiters to look up for themselves.
            self.lookup
                .inflight
                .lock()
                .expect("not poisoned")
                .remove(&self.hour);
        }
    }
}

#[cfg(test)]
mod tests;
