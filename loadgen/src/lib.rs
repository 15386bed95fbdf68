//! Load generator, verifier and benchmark baselines for the hourly analytics pipeline.
//!
//! | module | job |
//! | --- | --- |
//! | [`truth`] | ground truth of acknowledged writes, deterministic random numbers, request targets |
//! | [`traffic`] | realistic traffic: Zipf users, current-hour share, click/impression mix |
//! | [`client`] | a small HTTP/1.1 keep-alive client |
//! | [`run`] | a load run: paced or closed-loop clients, HDR histograms, verification, freshness probe |
//! | [`verify`] | reading hours back until each is as expected (also used by the e2e tests) |
//! | [`report`] | results as JSON and as a readable summary |
//! | [`baseline`] | a bare hyper server: the HTTP ceiling of the machine |
//! | [`kafka`] | a raw producer and a bare consumer: the broker's ceilings |
//! | [`plot`] | the PNG latency plot of `make bench` |

pub mod baseline;
pub mod client;
pub mod kafka;
pub mod plot;
pub mod report;
pub mod run;
pub mod traffic;
pub mod truth;
pub mod verify;
