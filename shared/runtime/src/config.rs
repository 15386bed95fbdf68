//! The flags of every service's process: logging, the stop's bound and the HTTP server's
//! limits. Each service flattens them into its own `clap` parser; every flag is also an
//! environment variable.

use analytics_model::duration::parse_duration;
use clap::{Args, ValueEnum};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging and process lifecycle.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Log output format (the level is set with RUST_LOG, default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Longest time to drain in-flight work after SIGINT/SIGTERM before exiting.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Most open HTTP connections; a connection beyond it gets one `503` and is closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Longest time a client may take to send a request's headers (and, with TLS, to finish
    /// the handshake); a slower client is disconnected. Also closes a keep-alive connection
    /// left idle that long.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
}
