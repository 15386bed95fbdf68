//! What the GET path needed beyond hyper, each piece measured against a bare hyper server
//! answering a fixed body (`make get-instructions`, `make bench` row 2): a newcomer can work
//! on the rest of the server without learning any of it.
//!
//! | module | job | what it saved, per GET |
//! | --- | --- | --- |
//! | `head_deadline` | `--header-read-timeout` kept per connection, not per request | a timer armed and removed in tokio's wheel for every request head (the largest cost left under keep-alive load) |
//! | `guard` | a connection with its drain and idle watchers, polled only when they wake | some 900 instructions of polling the drain's channel and the timer on every wake |
//! | `carve` | small answers (a request id, a three-line body) carved from a per-thread chunk | a `malloc` and a `free` each |
//!
//! With them (and the request read before its future, `dispatch`), a GET of the query
//! answered from its cache executes about 10 000 user-space instructions against the bare
//! server's 7 300 in the release build, and `make bench` puts its throughput at about 0.94 of
//! that server's, short of row 2's target of 0.95 (docs/benchmarks.md). The difference is
//! mostly what every request must get and the bare server skips: an id and its header (which
//! the load generator, on the same cores, parses too; about 700 instructions), a count and a
//! time in the metrics (about 400), the route, the edge's checks and the query string (about
//! 600). What was cut, and what was tried and measured without effect, is in
//! docs/benchmarks-notes.md.

mod carve;
pub(crate) mod guard;
pub(crate) mod head_deadline;

pub use carve::carve;
