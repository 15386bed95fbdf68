//! The domain model of the hourly analytics pipeline: what is counted and how it is stored,
//! with no I/O.
//!
//! | module | job |
//! | --- | --- |
//! | [`hour`] | hours and instants: [`hour::HourStart`], [`hour::Millis`], RFC 3339 |
//! | [`event`] | the records on Kafka: [`event::Event`], [`event::Partial`], their format versions, hour totals |
//! | [`query_string`] | strict query strings, and the one parser of a millisecond parameter |
//! | [`window`] | the event-time window (`--max-event-age`, `--max-future-skew`) |
//! | [`duration`] | durations as flags write them (`250ms`, `5s`, `24h`) |
//! | [`changelog`] | the processor's changelog records (binary, versioned) |
//! | [`clock`] | the wall clock |

pub mod changelog;
pub mod clock;
pub mod duration;
pub mod event;
pub mod hour;
pub mod query_string;
pub mod window;
