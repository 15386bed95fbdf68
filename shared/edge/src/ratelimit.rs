//! Per-client request rate limits (`--rate-limit`, `--rate-burst`), with [`governor`]'s GCRA.
//!
//! A client is a key name when API keys are configured, its address otherwise: an IPv4
//! address, or the /64 prefix of an IPv6 address (one host is commonly given a whole /64, so
//! limiting single IPv6 addresses would let one host rotate through 2^64 of them). The
//! limiter's table is bounded: [`Limiter::housekeeping`] drops clients whose bucket is full
//! again, and while the table holds [`MAX_TRACKED`] clients, clients *not yet in it* share
//! one overflow bucket; a client already in the table keeps its own. A flood of distinct
//! addresses therefore costs at most `MAX_TRACKED` entries (a few MiB), the flood itself is
//! limited as one client, and the clients known before it are not affected.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Most clients tracked one by one.
pub const MAX_TRACKED: usize = 65_536;

/// Who a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// An API key, by name.
    Key(Arc<str>),
    /// A browser (publishable) key, by name and client address ([`Client::from_addr`]).
    Browser(Arc<str>, IpAddr),
    /// An unauthenticated client, by address ([`Client::from_addr`]: IPv6 by its /64).
    Ip(IpAddr),
    /// Every client beyond [`MAX_TRACKED`].
    Overflow,
}

impl Client {
    /// The client of an unauthenticated request from `addr`: an IPv4 address (also when
    /// written as an IPv4-mapped IPv6 address), or the /64 prefix of an IPv6 address.
    pub fn from_addr(addr: IpAddr) -> Self {
        Client::Ip(limited_addr(addr))
    }

    /// A browser key's client: the key and the visitor's address, as [`Client::from_addr`]
    /// groups it.
    pub fn browser(key: Arc<str>, addr: IpAddr) -> Self {
        Client::Browser(key, limited_addr(addr))
    }
}

/// The address a limit applies to: an IPv4 address (also when written as an IPv4-mapped
/// IPv6 address), or the /64 prefix of an IPv6 address.
fn limited_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The limiter's table: governor's own concurrent map, bounded. A client not in the table is
/// measured against [`Client::Overflow`]'s bucket while the table holds `max_tracked`
/// clients; a client in it always against its own.
struct Table {
    map: DashMapStateStore<Client>,
    max_tracked: usize,
}

impl StateStore for Table {
    type Key = Client;

    fn measure_and_replace<T, F, E>(&self, key: &Client, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let key = if self.map.len() >= self.max_tracked && !self.map.contains_key(key) {
            &Client::Overflow
        } else {
            key
        };
        self.map.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<Client> for Table {
    fn retain_recent(&self, drop_below: Nanos) {
        self.map.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.map);
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

type Keyed =
    RateLimiter<Client, Table, DefaultClock, NoOpMiddleware<<DefaultClock as Clock>::Instant>>;

/// The rate limiter of one service.
pub struct Limiter {
    limiter: Keyed,
    clock: DefaultClock,
}

impl Limiter {
    /// `per_second` requests per second per client, in bursts of at most `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::with_capacity(per_second, burst, MAX_TRACKED)
    }

    fn with_capacity(per_second: NonZeroU32, burst: NonZeroU32, max_tracked: usize) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let table = Table {
            map: DashMapStateStore::default(),
            max_tracked,
        };
        let clock = DefaultClock::default();
        Self {
            limiter: RateLimiter::new(quota, table, clock.clone()),
            clock,
        }
    }

    /// Takes one request from `client`'s bucket (the overflow bucket for a client not yet
    /// tracked while the table is full); `Err` is how long until the next is allowed.
    pub fn check(&self, client: Client) -> Result<(), Duration> {
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets clients whose bucket is full again; call every few seconds.
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.clamp(1, u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_wait() {
        let l = Limiter::new(nz(1), nz(3));
        let me = Client::Key("me".into());
        for _ in 0..3 {
            assert!(l.check(me.clone()).is_ok());
        }
        let wait = l.check(me.clone()).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        // Another client has a bucket of its own.
        assert!(l.check(Client::Key("you".into())).is_ok());
    }

    #[test]
    fn the_table_is_bounded_under_a_flood_of_addresses() {
        let l = Limiter::with_capacity(nz(1), nz(1), 100);
        let mut refused = 0;
        for i in 0..10_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            if l.check(Client::Ip(ip)).is_err() {
                refused += 1;
            }
        }
        assert!(l.tracked() <= 101, "tracked {}", l.tracked());
        // The first 100 addresses had a bucket each; the rest shared one.
        assert_eq!(refused, 10_000 - 100 - 1);
    }

    #[test]
    fn a_client_known_before_a_flood_keeps_its_own_bucket() {
        let l = Limiter::with_capacity(nz(1), nz(3), 100);
        let known = Client::Key("known".into());
        assert!(l.check(known.clone()).is_ok());
        // A flood of new addresses fills the table, then shares the overflow bucket.
        for i in 0..10_000u32 {
            let _ = l.check(Client::Ip(IpAddr::from(i.to_be_bytes())));
        }
        assert!(l.tracked() <= 101, "tracked {}", l.tracked());
        assert!(
            l.check(Client::Ip([10, 0, 0, 1].into())).is_err(),
            "overflow is empty"
        );
        // The known client still has the two requests left in its own bucket of three.
        assert!(l.check(known.clone()).is_ok());
        assert!(l.check(known.clone()).is_ok());
        assert!(l.check(known).is_err());
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64_prefix() {
        let l = Limiter::new(nz(1), nz(1));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::from_addr(a), Client::from_addr(b));
        assert!(l.check(Client::from_addr(a)).is_ok());
        assert!(
            l.check(Client::from_addr(b)).is_err(),
            "same /64, same bucket"
        );
        assert!(l.check(Client::from_addr(other)).is_ok(), "another /64");
        // IPv4, plain or mapped into IPv6, is one address.
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Client::from_addr(v4), Client::from_addr(mapped));
        assert_ne!(
            Client::from_addr(v4),
            Client::from_addr("192.0.2.8".parse().unwrap())
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
