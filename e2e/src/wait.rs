//! Waiting for a condition instead of sleeping: a probe polled until it holds, within a
//! bounded time, failing with an error that names the condition and what was last seen.

use anyhow::{bail, Result};
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_for`] probes.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `probe` every [`POLL`] until it answers `Ok(Some(value))`, and returns the value;
/// fails once `timeout` has passed, naming `what` (the condition, e.g. "the command sees the
/// broker gone") and the last probe's answer.
///
/// `Ok(None)` means "not yet". An error means "not yet" too, and says why (a service that
/// does not answer while it restarts, or the value seen so far): it is kept for the error
/// message, not returned. A probe that does not finish by the deadline is abandoned.
///
/// A probe that reads only what it owns can be written `|| async move { ... }` with the
/// references it needs copied in; a synchronous one as `|| std::future::ready(...)`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no probe finished");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, probe()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => last = "not yet".to_owned(),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = format!("the last probe did not finish ({last} before it)"),
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}; last probe: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}
