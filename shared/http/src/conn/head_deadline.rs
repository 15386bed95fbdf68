//! `--header-read-timeout`, kept per connection rather than per request.
//!
//! hyper's own `header_read_timeout` arms a timer for every request head: a boxed `Sleep`
//! registered in tokio's timer wheel when hyper starts waiting for the head and removed when
//! the head has arrived, each a lock of the timer driver. Under keep-alive GET load that was
//! the largest cost left between the query and a bare hyper server (docs/benchmarks-notes.md).
//!
//! Here a connection instead counts its requests in an [`Activity`] (two uncontended atomic
//! additions per request, no clock read), and one [`watch`] per connection wakes four times
//! per timeout: if no request started or ended for a whole timeout and none is being handled,
//! the connection is closed. So a client that does not send a complete head within the
//! timeout of connecting, or of its previous answer, is cut off after between one and one
//! and a quarter timeouts; a request being handled (a slow batch upload, a slow lookup) is
//! never cut. Unlike hyper's timer, the time spent writing an answer to a client that does
//! not read it also counts, which only makes slow readers go sooner.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Requests on one connection: the count of starts and ends together, so an odd value means
/// a request is being handled, and any change means the connection is in use.
#[derive(Debug, Default)]
pub struct Activity(AtomicU64);

impl Activity {
    /// Marks a request as being handled until the returned guard drops.
    pub fn begin(&self) -> Busy<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    fn load(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A request being handled; its end is counted on drop (also when hyper drops it early).
pub struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Checks of an idle connection per timeout: the cut-off comes at most a quarter late.
const TICKS: u32 = 4;

/// What a connection's watch decides at each tick.
#[derive(Debug, Default)]
struct Idle {
    seen: u64,
    ticks: u32,
}

impl Idle {
    /// Whether the connection has now been idle (no head, no request) for [`TICKS`] ticks.
    fn expired(&mut self, now: u64) -> bool {
        if now != self.seen || now % 2 == 1 {
            self.seen = now;
            self.ticks = 0;
            return false;
        }
        self.ticks += 1;
        self.ticks >= TICKS
    }
}

/// Completes once the connection whose requests `activity` counts has been idle for
/// `timeout` (between one and one and a quarter of it); never while a request is handled.
pub async fn watch(activity: &Activity, timeout: Duration) {
    let tick = (timeout / TICKS).max(Duration::from_millis(1));
    let mut idle = Idle::default();
    loop {
        tokio::time::sleep(tick).await;
        if idle.expired(activity.load()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_connection_expires_after_four_idle_ticks() {
        let mut idle = Idle::default();
        assert_eq!(
            (0..4).map(|_| idle.expired(0)).collect::<Vec<_>>(),
            [false, false, false, true]
        );
    }

    #[test]
    fn a_request_in_progress_is_never_cut_and_a_finished_one_restarts_the_count() {
        let a = Activity::default();
        let mut idle = Idle::default();
        idle.expired(a.load());
        idle.expired(a.load());
        let busy = a.begin();
        for _ in 0..100 {
            assert!(!idle.expired(a.load()), "cut while a request is handled");
        }
        drop(busy);
        // The end of the request, seen at the next tick, restarts the count: four idle ticks
        // after that one (the end came during the tick before it).
        assert_eq!(
            (0..5).map(|_| idle.expired(a.load())).collect::<Vec<_>>(),
            [false, false, false, false, true]
        );
    }

    #[test]
    fn requests_between_ticks_keep_the_connection() {
        let a = Activity::default();
        let mut idle = Idle::default();
        for _ in 0..100 {
            idle.expired(a.load());
            idle.expired(a.load());
            drop(a.begin());
            assert!(!idle.expired(a.load()));
        }
    }

    #[tokio::test]
    async fn watch_completes_on_an_idle_connection_and_never_on_a_busy_one() {
        let a = Activity::default();
        let t = Duration::from_millis(20);
        // Liveness only (no timing asserted): an idle connection's watch ends.
        tokio::time::timeout(Duration::from_secs(30), watch(&a, t))
            .await
            .expect("an idle connection was never cut");
        // Fifteen timeouts with a request in hand: still watching, however slow the machine.
        let busy = a.begin();
        let r = tokio::time::timeout(15 * t, watch(&a, t)).await;
        assert!(r.is_err(), "cut while a request was handled");
        drop(busy);
    }
}
