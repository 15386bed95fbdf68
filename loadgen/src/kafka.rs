//! The broker's ceilings: a raw rdkafka producer writing the command's events with the same
//! durability (`acks=all`, idempotent) and the same number of writes in flight as HTTP
//! clients, and a bare consumer that reads a topic and does nothing else.

use crate::report::Latency;
use crate::run::histogram;
use crate::traffic::{Shape, Traffic};
use analytics_model::event::{Event, EventKind};
use analytics_model::hour::Millis;
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

/// Produces `events` events to `topic` keeping `in_flight` sends outstanding; returns the
/// per-send latency (send to acknowledgement) over the whole run.
pub async fn produce(
    brokers: &str,
    topic: &str,
    events: u64,
    in_flight: usize,
    linger_ms: u32,
    shape: Shape,
    seed: u64,
) -> Result<Latency> {
    produce_recorded(
        brokers,
        topic,
        events,
        in_flight,
        linger_ms,
        shape,
        seed,
        |_| {},
    )
    .await
}

/// [`produce`], handing every event to `recorded` (for a ground truth) as it is sent; a send
/// that fails fails the whole run, so every recorded event was acknowledged when it returns.
#[allow(clippy::too_many_arguments)]
pub async fn produce_recorded(
    brokers: &str,
    topic: &str,
    events: u64,
    in_flight: usize,
    linger_ms: u32,
    shape: Shape,
    seed: u64,
    mut recorded: impl FnMut(&crate::truth::Post),
) -> Result<Latency> {
    let mut traffic = Traffic::new(shape, seed);
    let posts = (0..events).map(|_| {
        let p = traffic.post(analytics_model::clock::now_ms());
        recorded(&p);
        p
    });
    produce_posts(brokers, topic, posts, in_flight, linger_ms).await
}

/// Produces `posts` to `topic` as the command would (received now, binary format), keeping
/// `in_flight` sends outstanding; fails if any send fails.
pub async fn produce_posts(
    brokers: &str,
    topic: &str,
    posts: impl Iterator<Item = crate::truth::Post>,
    in_flight: usize,
    linger_ms: u32,
) -> Result<Latency> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms.to_string())
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the producer")?;
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(in_flight);
    let mut h = histogram();
    let (mut sent, mut errors) = (0u64, 0u64);
    for p in posts {
        let now = analytics_model::clock::now_ms();
        let event = Event {
            timestamp: Millis(p.ts),
            user: p.user,
            kind: if p.click {
                EventKind::Click
            } else {
                EventKind::Impression
            },
            received_at: Millis(now),
            id: p.id,
        };
        let payload = event.encode();
        let record = FutureRecord::to(topic)
            .key(&event.user)
            .payload(&payload)
            .timestamp(now);
        let f = producer.send_result(record).map_err(|(e, _)| e)?;
        sent += 1;
        pending.push_back((Instant::now(), f));
        if pending.len() >= in_flight {
            let (at, f) = pending.pop_front().expect("not empty");
            match f.await {
                Ok(Ok(_)) => {
                    h.saturating_record(at.elapsed().as_micros().max(1) as u64);
                }
                _ => errors += 1,
            }
        }
    }
    for (at, f) in pending {
        match f.await {
            Ok(Ok(_)) => {
                h.saturating_record(at.elapsed().as_micros().max(1) as u64);
            }
            _ => errors += 1,
        }
    }
    anyhow::ensure!(errors == 0, "{errors} of {sent} sends failed");
    Latency::of(&h, started.elapsed()).context("no events")
}

/// Reads `events` records of `topic` from the beginning with a fresh group, doing nothing
/// with them; returns records per second from the first record on. It fetches like the
/// services do ([`analytics_kafka::client::FETCH_WAIT_MAX_MS`],
/// [`analytics_kafka::client::FETCH_QUEUE_BACKOFF_MS`],
/// [`analytics_kafka::client::QUEUED_MIN_MESSAGES`]).
pub fn consume(brokers: &str, topic: &str, events: u64, timeout: Duration) -> Result<f64> {
    let group = format!("loadgen-bare-{}", analytics_model::clock::now_ms());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "fetch.wait.max.ms",
            analytics_kafka::client::FETCH_WAIT_MAX_MS,
        )
        .set(
            "fetch.queue.backoff.ms",
            analytics_kafka::client::FETCH_QUEUE_BACKOFF_MS,
        )
        .set(
            "queued.min.messages",
            analytics_kafka::client::QUEUED_MIN_MESSAGES,
        )
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0u64;
    let mut started: Option<Instant> = None;
    let deadline = Instant::now() + timeout;
    while seen < events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "read {seen} of {events} records before the timeout"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            started.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    Ok(seen as f64 / secs.max(1e-9))
}

/// The broker alone, between a write and a read: one record every `interval` to partition 0
/// of `topic`, acknowledged by all replicas, and a consumer that fetches with
/// `fetch.wait.max.ms = fetch_wait_ms`; returns the time from each send to its record's
/// arrival at the consumer (one clock: the same process).
///
/// On Apache Kafka a fetch that waits for data is answered as soon as data arrive, so this
/// is about the produce round trip whatever the wait; a broker that holds every waiting fetch
/// for its full wait shows a time spread over `0..fetch_wait_ms` on top of that.
pub fn fetch_latency(
    brokers: &str,
    topic: &str,
    samples: u64,
    interval: Duration,
    fetch_wait_ms: u32,
) -> Result<Latency> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("fetch-latency-{}", analytics_model::clock::now_ms()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating the consumer")?;
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating the producer")?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::End)?;
    consumer.assign(&tpl)?;
    // Let the consumer reach the end of the partition before the first record.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let mut h = histogram();
    let started = Instant::now();
    for i in 0..samples {
        let sent = Instant::now();
        let payload = i.to_string();
        producer
            .send(
                rdkafka::producer::BaseRecord::<str, str>::to(topic)
                    .partition(0)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)?;
        producer.poll(Duration::ZERO);
        let deadline = sent + Duration::from_secs(10);
        loop {
            anyhow::ensure!(Instant::now() < deadline, "record {i} never arrived");
            producer.poll(Duration::ZERO);
            match consumer.poll(Duration::from_millis(1)) {
                Some(Ok(m)) if rdkafka::Message::payload(&m) == Some(payload.as_bytes()) => break,
                Some(Err(e)) => return Err(e.into()),
                _ => {}
            }
        }
        h.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        // A pause of its own before the next record, so that each one meets a fetch that is
        // already waiting, as a live event does.
        std::thread::sleep(interval.saturating_sub(sent.elapsed()));
    }
    Latency::of(&h, started.elapsed()).context("no sample")
}
