//! Kafka for the services: the flags, the client settings every client starts from, the
//! project's topics, an idempotent producer that replaces itself when the broker rejects its
//! state, and the offset-gap guard of the consumers that must not skip a record.
//!
//! | module | job |
//! | --- | --- |
//! | [`args`] | `--kafka-brokers`, `--kafka-option`, the topic names |
//! | [`client`] | base client and consumer settings, consumer lag |
//! | [`topics`] | the project's topics and their idempotent creation |
//! | [`producer`] | [`producer::Recovering`]: the self-replacing idempotent producer |
//! | [`gaps`] | [`gaps::GapGuard`]: never step over a record the broker has not made readable |
//! | [`metrics`] | the families every Kafka client of a service shares |

pub mod args;
pub mod client;
pub mod gaps;
pub mod metrics;
pub mod producer;
pub mod topics;
