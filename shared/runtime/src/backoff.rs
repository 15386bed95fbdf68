//! The one retry pacing of the services: exponential backoff, doubling from a first delay up
//! to [`Backoff::MAX`].
//!
//! Hand-written rather than a retry crate (`backon`): the retry loops differ in everything but
//! the pacing (one blocks a consumer thread, others await; one replaces a producer between
//! attempts; each watches a cancellation token its own way), and the pacing is these few
//! lines.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// Longest delay between two attempts.
    pub const MAX: Duration = Duration::from_secs(5);

    /// Pacing whose first delay is `first`.
    pub fn new(first: Duration) -> Self {
        Self { next: first }
    }

    /// The delay to wait before the next attempt; each call doubles the following one, up
    /// to [`Backoff::MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100));
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
