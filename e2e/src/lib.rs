//! Test harness: starts a real Kafka-protocol broker (nisshi), `redis-server` and PostgreSQL
//! on free ports with temporary data, and the four services as real processes. Everything
//! is stopped when the [`Stack`] (or [`Service`]) is dropped, also when a test fails.
//!
//! The broker keeps its log in memory unless [`Options::persistent_broker`] is set: then it
//! keeps it in SQLite under the stack's directory, and [`Stack::stop_broker`] and
//! [`Stack::start_broker`] restart the real process on the same port with its data.
//!
//! Each test file is a binary of its own (21 of them, each linking librdkafka). One binary
//! for all of them was measured and not kept: building every test binary from a clean `e2e`
//! takes 17 s on two cores (`cargo clean -p e2e; cargo test -p e2e --no-run`) and relinking
//! them after a change 7 s, against some eight minutes for `make test`, while one binary would
//! run its tests as threads of one process, several stacks at once on two cores, unless told
//! `--test-threads=1`.
//!
//! Binaries are found in `ANALYTICS_BIN_DIR` (default: the workspace's `target/debug`);
//! tools via `BROKER_BIN`, `PG_BINDIR` and `REDIS_SERVER`, as printed by
//! `deploy/local/install-deps.sh`, or at their default locations.
//!
//! | module | what |
//! | --- | --- |
//! | [`process`] | child processes killed on drop, free ports |
//! | [`stack`] | broker, Redis and PostgreSQL of one test; starting services against them |
//! | [`postgres`], [`redis`] | PostgreSQL's binaries and initdb; looking into a stack's Redis |
//! | [`service`] | a running service and the flags tests give each one |
//! | [`pipeline`] | the four services started on a stack in one call |
//! | [`wait`] | waiting for a condition, within a bound, instead of sleeping |
//! | [`scrape`] | reading `/metrics` (parsed with `prometheus-parse`) |
//! | [`relay`] | a TCP relay that takes the broker off the network |
//! | [`driver`], [`workload`] | load with its own books, datasets and exact waits |
//! | [`outage`] | the broker-outage and broker-restart scenario |
//! | [`forensics`] | where events went missing, when a count does not match |
//! | [`front`] | the front door (nginx) in front of a stack's services |

pub mod driver;
pub mod forensics;
pub mod front;
pub mod outage;
pub mod pipeline;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod relay;
pub mod scrape;
pub mod service;
pub mod stack;
pub mod wait;
pub mod workload;

/// The small HTTP client of the load generator.
pub use loadgen::client as http;

pub use pipeline::{Pipeline, PipelineOptions};
pub use process::{free_port, free_ports, rss_bytes, wait_port, Proc};
pub use scrape::{metric, report_gaps};
pub use service::{
    all_ready, Flags, Service, BROKER_REBALANCE_DELAY, MATERIALIZER_ARGS, PROCESSOR_ARGS,
    QUERY_ARGS,
};
pub use stack::{as_postgres, pg_bindir, postgres_ids, Options, Stack};
pub use wait::wait_for;
