//! What the processor writes, and the one retry policy for writing it.
//!
//! Every record goes to one [`Destination`]: a partial to the hourly topic (partitioned by
//! its key, as any producer would), a changelog record to the changelog partition of its
//! source partition, a dead letter to the dead-letter topic. [`Publish`] is the seam between
//! the flush logic and Kafka: [`KafkaPublisher`] in the service, a recording fake in the
//! pipeline's unit tests. A publish succeeds only when the broker acknowledged every record
//! of the call; [`publish_retrying`] repeats it with backoff (replacing a producer whose
//! state the broker rejected) until it succeeds or the caller gives up.
//!
//! Publishing blocks the calling thread (a sleep between attempts, `block_on` for the
//! acknowledgements) because that thread is the pipeline's own, not a tokio worker, and the
//! pipeline must not consume further until its flush is acknowledged.

use crate::changelog::Record;
use analytics_kafka::producer::Recovering;
use analytics_model::event::Partial;
use analytics_runtime::backoff::Backoff;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The hourly topic (compacted, keyed by hour and source partition).
    Hourly,
    /// The changelog partition of this source partition.
    Changelog(i32),
    /// The dead-letter topic.
    DeadLetter,
}

/// A record to publish.
#[derive(Debug, Clone)]
pub struct Out {
    pub destination: Destination,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Out {
    pub fn partial(p: &Partial) -> Self {
        Out {
            destination: Destination::Hourly,
            key: p.key().into_bytes(),
            payload: p.encode(),
        }
    }

    pub fn changelog(partition: i32, record: Record) -> Self {
        Out {
            destination: Destination::Changelog(partition),
            key: partition.to_string().into_bytes(),
            payload: record.encode(),
        }
    }

    pub fn dead_letter(key: Vec<u8>, body: String) -> Self {
        Out {
            destination: Destination::DeadLetter,
            key,
            payload: body.into_bytes(),
        }
    }
}

/// Something records can be published to.
pub trait Publish: Send {
    /// Sends the records; true when the broker acknowledged every one of them.
    fn publish(&mut self, records: &[Out]) -> bool;
    /// Called between failed attempts: a chance to replace a broken producer.
    fn recover(&mut self) {}
}

/// [`Publish::publish`] until it succeeds, with [`Backoff`] from 100 ms to 5 s; false
/// if `cancel` fired first (nothing of a failed attempt counts as acknowledged).
pub fn publish_retrying(
    publisher: &mut dyn Publish,
    records: &[Out],
    cancel: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(100));
    while !publisher.publish(records) {
        if cancel.is_cancelled() {
            return false;
        }
        publisher.recover();
        std::thread::sleep(backoff.next_delay());
    }
    true
}

/// The topic names of the three destinations.
#[derive(Debug, Clone)]
pub struct Topics {
    pub hourly: String,
    pub changelog: String,
    pub dead_letter: String,
}

/// Publishes through the processor's idempotent producer and waits for the acknowledgements
/// on the runtime (the pipeline runs on a thread of its own).
pub struct KafkaPublisher {
    pub producer: Arc<Recovering<DefaultClientContext>>,
    pub topics: Topics,
    pub runtime: tokio::runtime::Handle,
}

impl Publish for KafkaPublisher {
    fn publish(&mut self, records: &[Out]) -> bool {
        let mut futures = Vec::with_capacity(records.len());
        for o in records {
            let (topic, partition) = match o.destination {
                Destination::Hourly => (&self.topics.hourly, None),
                Destination::Changelog(p) => (&self.topics.changelog, Some(p)),
                Destination::DeadLetter => (&self.topics.dead_letter, None),
            };
            loop {
                let mut record = FutureRecord::to(topic).key(&o.key).payload(&o.payload);
                if let Some(p) = partition {
                    record = record.partition(p);
                }
                match self.producer.send_result(record) {
                    Ok(f) => break futures.push(f),
                    Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                        tracing::debug!("producer queue full; waiting");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err((e, _)) => {
                        tracing::warn!(error = %e, "cannot publish; retrying");
                        return false;
                    }
                }
            }
        }
        self.runtime.block_on(async move {
            let mut ok = true;
            for f in futures {
                if let Err(e) = f.delivered().await {
                    tracing::warn!(error = %e, "publishing failed; retrying");
                    ok = false;
                }
            }
            ok
        })
    }

    fn recover(&mut self) {
        // A fenced producer never recovers by itself (see analytics_kafka::producer).
        if let Err(e) = self.producer.recover() {
            tracing::warn!(error = %e, "cannot replace the producer yet");
        }
    }
}
