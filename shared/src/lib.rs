//! The common crate of the hourly analytics pipeline.
//!
//! | module | job |
//! | --- | --- |
//! | [`hour`] | hour math (UTC hour of a millisecond timestamp) and RFC 3339 formatting |
//! | [`event`] | the records on Kafka: [`event::Event`], [`event::Partial`], and hour totals |
//! | [`query_string`] | strict query-string and `timestamp` parsing for the HTTP APIs |
//! | [`config`] | `clap` argument groups flattened into every service (each flag is an env var) |
//! | `kafka` (feature `kafka`) | Kafka client configuration and idempotent topic creation |
//! | `producer` (feature `kafka`) | an idempotent producer that replaces itself when the broker rejects its state |
//! | [`gaps`] | the offset-gap guard: never step over a record the broker has not made readable yet |
//! | `redis_store` (feature `redis`) | the per-hour Redis hash and its offset-guarded, never-partial merge |
//! | `pg` (feature `postgres`) | the PostgreSQL table of partials, migrations and the guarded upsert |
//! | [`http`] | the HTTP server loop, common endpoints and the HTTP error type |
//! | [`edge`] | the public edge of command and query: keys, protected mode, rate limits, TLS, admin listener |
//! | [`keytool`] | `keys new`: mint an API key |
//! | [`auth`], [`ratelimit`], [`tls`] | the keys file, the per-client limiter, the reloadable certificate |
//! | [`metrics`] | metric registry helpers and HTTP metrics |
//! | [`openapi`] | the OpenAPI document, served by command and query |
//! | [`telemetry`], [`shutdown`], [`clock`] | logging, signal handling, wall clock |
//! | [`backoff`] | the retry pacing every retry loop uses |
//!
//! Each service enables only the features it uses (`cargo tree -p query` has no rdkafka,
//! `cargo tree -p command` no Redis or PostgreSQL client), so `cargo build -p query` compiles
//! none of librdkafka. A build of several services at once (`make build`, the image) unifies
//! the features: this crate is then compiled once with all three, and each binary still
//! links only the code it calls.

pub mod auth;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod edge;
pub mod event;
pub mod gaps;
pub mod hour;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod keytool;
pub mod metrics;
pub mod openapi;
#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(feature = "kafka")]
pub mod producer;
pub mod query_string;
pub mod ratelimit;
#[cfg(feature = "redis")]
pub mod redis_store;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
