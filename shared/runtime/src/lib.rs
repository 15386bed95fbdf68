//! A service's process around its work: runtime flags, logging, the signal that stops it and
//! the bound on that stop, the retry pacing, and the metric registry every service fills.
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | `--log-format`, `--shutdown-timeout`, the HTTP server's limits |
//! | [`telemetry`] | logging setup |
//! | [`shutdown`] | one cancellation token per process, SIGINT/SIGTERM, the stop's deadline |
//! | [`backoff`] | the retry pacing every retry loop uses |
//! | [`metrics`] | the registry, metric constructors, label enums ([`metrics::LabelValue`]) |

pub mod backoff;
pub mod config;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
