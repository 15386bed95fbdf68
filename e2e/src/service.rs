//! A running service of the pipeline, and the flags the tests start each one with.

use crate::http;
use crate::process::Proc;
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// The broker's `--group-initial-rebalance-delay` in tests and `make run`.
pub const BROKER_REBALANCE_DELAY: &str = "100ms";

/// Processor flags for tests: frequent flushes and a short session.
pub const PROCESSOR_ARGS: &[&str] = &["--flush-interval", "100ms", "--session-timeout", "3s"];

/// Materializer flags for tests (none beyond the defaults today; kept so that every test
/// starts the materializer the same way).
pub const MATERIALIZER_ARGS: &[&str] = &[];

/// Query flags for tests: caches short enough that a test sees new values at once.
pub const QUERY_ARGS: &[&str] = &[
    "--cache-current-hour",
    "100ms",
    "--cache-other-hours",
    "100ms",
];

/// How one service is started: the flags after `--listen`, and environment variables set
/// over those the stack gives every service (`KAFKA_BROKERS`, `REDIS_URL`, `POSTGRES_URL`,
/// `RUST_LOG=info`), e.g. `RUST_LOG=debug`.
#[derive(Debug, Clone, Copy)]
pub struct Flags<'a> {
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
}

impl<'a> Flags<'a> {
    /// These flags, with the stack's environment unchanged.
    pub const fn args(args: &'a [&'a str]) -> Self {
        Self { args, env: &[] }
    }
}

/// Waits until every service answers `/readyz` with `200` (a minute at most each).
pub async fn all_ready(services: &[&Service]) -> Result<()> {
    for s in services {
        s.wait_ready(Duration::from_secs(60)).await?;
    }
    Ok(())
}

/// A running service.
pub struct Service {
    pub port: u16,
    pub proc: Proc,
}

impl Service {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(mut c) = http::Client::connect(&self.addr()).await {
                if let Ok(r) = c.request("GET", "/readyz", &[]).await {
                    if r.status == 200 {
                        return Ok(());
                    }
                    last = r.body;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{} not ready after {timeout:?}: {last}\n{}",
            self.proc.name,
            self.proc.tail(30)
        )
    }
}
