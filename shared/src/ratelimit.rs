//! Per-client request rate limits (`--rate-limit`, `--rate-burst`), with [`governor`]'s GCRA.
//!
//! A client is a key name when API keys are configured, its IP address otherwise. The
//! limiter's table is bounded: [`Limiter::housekeeping`] drops clients whose bucket is full
//! again, and while the table holds [`MAX_TRACKED`] clients, clients not yet in it share one
//! overflow bucket. A flood of distinct addresses therefore costs at most `MAX_TRACKED`
//! entries (a few MiB), and the flood itself is limited as one client.

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
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
    /// An unauthenticated client, by address.
    Ip(IpAddr),
    /// Every client beyond [`MAX_TRACKED`].
    Overflow,
}

type Keyed = RateLimiter<
    Client,
    governor::state::keyed::DefaultKeyedStateStore<Client>,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// The rate limiter of one service.
pub struct Limiter {
    limiter: Keyed,
    clock: DefaultClock,
    max_tracked: usize,
}

impl Limiter {
    /// `per_second` requests per second per client, in bursts of at most `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::with_capacity(per_second, burst, MAX_TRACKED)
    }

    fn with_capacity(per_second: NonZeroU32, burst: NonZeroU32, max_tracked: usize) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            max_tracked,
        }
    }

    /// Takes one request from `client`'s bucket; `Err` is how long until the next is allowed.
    pub fn check(&self, client: Client) -> Result<(), Duration> {
        let client = if self.limiter.len() >= self.max_tracked {
            Client::Overflow
        } else {
            client
        };
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
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
