//! An idempotent producer that replaces itself once its producer state is broken.
//!
//! An idempotent producer carries a producer id, an epoch and per-partition sequence
//! numbers. Some broker answers mean that state is no longer usable: librdkafka raises a
//! *fatal* error for some (after which every send fails), and others (`PRODUCER_FENCED`,
//! `UNKNOWN_PRODUCER_ID`, …) fail each later send the same way. Both happened with the
//! former local broker, Tansu 0.6.0, after an outage: once messages time out, librdkafka
//! bumps its epoch (KIP-360), which Tansu did not implement, and every later produce was
//! answered `PRODUCER_FENCED`. librdkafka's remedy is a new instance; kept as a defence
//! although nisshi 0.8.1 has not needed it (docs/operations.md, "Local broker").
//!
//! Messages go through [`Recovering::send_result`] and [`Sent::delivered`], which note the
//! instance as broken when a send fails with one of those errors ([`breaks_producer`]). A
//! recovery loop (the command's broker probe, the processor's publish and restore retries)
//! then calls [`Recovering::recover`], which replaces the instance once, however many sends
//! failed.
//! Messages of the old instance that were not acknowledged fail, which every caller already
//! handles as "not acknowledged": the command answers `503` (may or may not be stored), the
//! processor publishes again.

use prometheus::IntCounter;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::ToBytes;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Does this delivery error mean the producer's id, epoch or sequence state is unusable?
pub fn breaks_producer(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Fatal
                | Fenced
                | GaplessGuarantee
                | ProducerFenced
                | InvalidProducerEpoch
                | InvalidProducerIdMapping
                | UnknownProducerId
                | OutOfOrderSequenceNumber
        )
    )
}

/// A [`FutureProducer`] that can be swapped for a fresh one when its state is broken.
pub struct Recovering<C: ClientContext + Clone + 'static> {
    config: ClientConfig,
    context: C,
    current: RwLock<Arc<FutureProducer<C>>>,
    /// Increases with every replacement.
    generation: AtomicU64,
    /// One more than the newest generation a sender saw broken (0: none).
    broken: AtomicU64,
    /// Serialises replacements.
    replacing: Mutex<()>,
    replaced: IntCounter,
}

impl<C: ClientContext + Clone + 'static> Recovering<C> {
    /// `replaced` counts the replacements (see [`crate::metrics::producer_replacements`]).
    pub fn new(config: ClientConfig, context: C, replaced: IntCounter) -> KafkaResult<Self> {
        let first = config.create_with_context(context.clone())?;
        Ok(Self {
            config,
            context,
            current: RwLock::new(Arc::new(first)),
            generation: AtomicU64::new(0),
            broken: AtomicU64::new(0),
            replacing: Mutex::new(()),
            replaced,
        })
    }

    /// The current instance, for anything but sending (metadata, flush, queue depth).
    pub fn get(&self) -> Arc<FutureProducer<C>> {
        self.current.read().expect("not poisoned").clone()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Notes that a send of instance `generation` failed with `error`; true if that error
    /// means the instance must be replaced. Cheap: callable on the runtime.
    fn mark_broken(&self, generation: u64, error: &KafkaError) -> bool {
        if !breaks_producer(error) {
            return false;
        }
        self.broken.fetch_max(generation + 1, Ordering::AcqRel);
        true
    }

    /// Hands `record` to the current instance. The instance is not held while the delivery
    /// is awaited, so a replacement can drop it meanwhile.
    #[allow(clippy::result_large_err)]
    pub fn send_result<'r, K, P>(
        &self,
        record: FutureRecord<'r, K, P>,
    ) -> Result<Sent<'_, C>, (KafkaError, FutureRecord<'r, K, P>)>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let generation = self.generation();
        match self.get().send_result(record) {
            Ok(future) => Ok(Sent {
                owner: self,
                generation,
                future,
            }),
            Err((e, record)) => {
                self.mark_broken(generation, &e);
                Err((e, record))
            }
        }
    }

    /// Is a replacement pending (a send failed with a breaking error, or a fatal error)?
    fn needs_replacement(&self) -> bool {
        self.broken.load(Ordering::Acquire) == self.generation() + 1
            || self.get().client().fatal_error().is_some()
    }

    /// Replaces the current instance if it was marked broken or hit a fatal error; true if
    /// it did. Blocking (it creates a client and destroys the old one, which waits up to
    /// half a second for purged messages): call it off the async runtime.
    pub fn recover(&self) -> KafkaResult<bool> {
        let _one_at_a_time = self.replacing.lock().expect("not poisoned");
        if !self.needs_replacement() {
            return Ok(false);
        }
        let reason = match self.get().client().fatal_error() {
            Some((code, reason)) => format!("fatal error {code:?}: {reason}"),
            None => "a delivery failed with a producer-state error".to_owned(),
        };
        let fresh = Arc::new(self.config.create_with_context(self.context.clone())?);
        let old = std::mem::replace(&mut *self.current.write().expect("not poisoned"), fresh);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.replaced.inc();
        tracing::warn!(
            reason,
            "producer state broken: replaced it with a new instance"
        );
        // Unacknowledged messages of the old instance fail now rather than at their timeout.
        old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        drop(old);
        Ok(true)
    }
}

/// A message handed to the producer; [`Sent::delivered`] waits for the broker's answer.
pub struct Sent<'a, C: ClientContext + Clone + 'static> {
    owner: &'a Recovering<C>,
    generation: u64,
    future: DeliveryFuture,
}

impl<C: ClientContext + Clone + 'static> Sent<'_, C> {
    /// The broker's answer. A failure that breaks the producer marks its instance for
    /// replacement; [`KafkaError::Canceled`]: the instance was dropped before it answered.
    pub async fn delivered(self) -> KafkaResult<Delivery> {
        match self.future.await {
            Ok(Ok(delivery)) => Ok(delivery),
            Ok(Err((e, _))) => {
                self.owner.mark_broken(self.generation, &e);
                Err(e)
            }
            Err(_canceled) => Err(KafkaError::Canceled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::client::DefaultClientContext;

    fn producer() -> Recovering<DefaultClientContext> {
        let mut cfg = ClientConfig::new();
        // Nothing listens there; creating a client does not connect.
        cfg.set("bootstrap.servers", "127.0.0.1:9")
            .set("enable.idempotence", "true");
        let counter = IntCounter::new("replaced_total", "test").unwrap();
        Recovering::new(cfg, DefaultClientContext, counter).unwrap()
    }

    fn error(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn only_producer_state_errors_break_the_producer() {
        assert!(breaks_producer(&error(RDKafkaErrorCode::ProducerFenced)));
        assert!(breaks_producer(&error(RDKafkaErrorCode::Fatal)));
        assert!(breaks_producer(&error(RDKafkaErrorCode::UnknownProducerId)));
        assert!(!breaks_producer(&error(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!breaks_producer(&error(RDKafkaErrorCode::QueueFull)));
        assert!(!breaks_producer(&error(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }

    #[test]
    fn a_broken_instance_is_replaced_once() {
        let p = producer();
        assert!(!p.recover().unwrap(), "nothing to replace");
        let g = p.generation();
        assert!(!p.mark_broken(g, &error(RDKafkaErrorCode::MessageTimedOut)));
        assert!(
            !p.recover().unwrap(),
            "a timeout does not break the producer"
        );
        // Many sends of the same instance fail: one replacement.
        assert!(p.mark_broken(g, &error(RDKafkaErrorCode::ProducerFenced)));
        assert!(p.mark_broken(g, &error(RDKafkaErrorCode::ProducerFenced)));
        assert!(p.recover().unwrap());
        assert!(!p.recover().unwrap());
        assert_eq!(p.generation(), g + 1);
        assert_eq!(p.replaced.get(), 1);
        // A late failure of the old instance does not replace the new one.
        p.mark_broken(g, &error(RDKafkaErrorCode::ProducerFenced));
        assert!(!p.recover().unwrap());
        assert_eq!(p.replaced.get(), 1);
    }
}
