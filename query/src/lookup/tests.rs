use super::*;
use analytics_model::hour::HOUR_MS;
use analytics_store::pg::Role;

/// A lookup whose stores are never reached (both connect on first use).
fn lookup() -> Lookup {
    let redis = Arc::new(RedisStore::new("redis://127.0.0.1:1/", "test").unwrap());
    let pg = PgStore::new("postgres://test@127.0.0.1:1/test", Role::Reader, "test");
    let policy = CachePolicy {
        current_hour: Duration::from_millis(250),
        other_hours: Duration::from_secs(5),
        backfill_ttl: Duration::from_secs(60),
    };
    Lookup::new(redis, Arc::new(pg.unwrap()), policy, Metrics::default())
}

/// The `n`th hour of 1970.
fn hour(n: i64) -> HourStart {
    HourStart::new(n * HOUR_MS).unwrap()
}

fn all(n: u64) -> HourTotals {
    HourTotals {
        unique_users: n,
        clicks: n,
        impressions: n,
    }
}

#[test]
fn the_hour_refreshed_longest_ago_is_evicted_first() {
    let l = lookup();
    let full = CACHE_CAPACITY.get() as i64;
    for h in 0..full {
        l.remember(hour(h), all(1), Millis(0));
    }
    l.remember(hour(0), all(2), Millis(0)); // hour 0 refreshed: now the newest
    l.remember(hour(full), all(1), Millis(0)); // one more: hour 1 goes
    let cache = l.cache.read().unwrap();
    assert_eq!(cache.len(), CACHE_CAPACITY.get());
    assert_eq!(cache.peek(&hour(0)).map(|e| e.totals), Some(all(2)));
    assert!(cache.peek(&hour(1)).is_none());
    assert!(cache.peek(&hour(2)).is_some());
}

#[test]
fn a_refresh_never_lowers_what_was_served() {
    let l = lookup();
    l.remember(hour(0), all(5), Millis(10));
    let e = l.remember(hour(0), all(3), Millis(7));
    assert_eq!(e.totals, all(5));
    assert_eq!(e.newest_received_at, Millis(10));
}

#[test]
fn totals_never_go_backwards() {
    let a = HourTotals {
        unique_users: 5,
        clicks: 9,
        impressions: 1,
    };
    let b = HourTotals {
        unique_users: 4,
        clicks: 10,
        impressions: 1,
    };
    assert_eq!(
        max_totals(a, b),
        HourTotals {
            unique_users: 5,
            clicks: 10,
            impressions: 1
        }
    );
}
