//! A consumer positioned in the middle of a stored batch (a restored checkpoint, a committed
//! offset) must read exactly from that offset on. Apache Kafka and the local broker (nisshi
//! 0.8.1) return the whole batch and the client drops the records before the offset; the
//! local broker's predecessor (Tansu 0.6.0) returned the *following* batches only, and
//! consumers silently skipped the rest of the batch. The gap guard (`analytics_kafka::gaps`) stays in
//! every consumer, because real gaps exist on Apache Kafka too (compaction, transaction
//! markers) and a broker that skips must never cost an event: this test shows that the guard,
//! driving a real consumer's seeks as the processor and the materializer do, reads every
//! record exactly, and that the broker itself no longer skips (a plain consumer reads them
//! all too: should that change, the test fails and says so).

use analytics_kafka::gaps::{GapGuard, Verdict};
use anyhow::{ensure, Result};
use e2e::Stack;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const TOPIC: &str = "gaps";

/// Reads partition 0 from `start` until `end` (exclusive) or for a few seconds; with a guard,
/// the way the services do, without one the way a plain consumer does.
fn read(brokers: &str, start: i64, end: i64, mut guard: Option<GapGuard>) -> Result<Vec<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "gaps-test")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(start))?;
    c.assign(&tpl)?;
    let mut next = start;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while next < end && Instant::now() < deadline {
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        let offset = m.offset();
        let verdict = match guard.as_mut() {
            Some(g) => g.check(0, next, offset, m.timestamp().to_millis()),
            None if offset < next => Verdict::Behind,
            None => Verdict::InOrder,
        };
        match verdict {
            Verdict::InOrder | Verdict::Skip { .. } => {
                got.push(offset);
                next = offset + 1;
            }
            Verdict::Behind => {}
            Verdict::Refetch { from } => {
                c.seek(TOPIC, 0, Offset::Offset(from), Duration::from_secs(1))?
            }
        }
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_positioned_mid_batch_read_every_record() -> Result<()> {
    let stack = Stack::start()?;
    let brokers = stack.kafka_brokers();
    stack.create_topic(TOPIC, 1).await?;
    // One batch of 100 records (a long linger), then a batch of 10.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "300")
        .create()?;
    for range in [0..100, 100..110] {
        let mut acks = Vec::new();
        for i in range {
            let payload = i.to_string();
            let record = FutureRecord::to(TOPIC)
                .partition(0)
                .key("k")
                .payload(&payload);
            acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for a in acks {
            a.await?.map_err(|(e, _)| e)?;
        }
    }

    let guarded =
        tokio::task::block_in_place(|| read(&brokers, 50, 110, Some(GapGuard::default())))?;
    let want: Vec<i64> = (50..110).collect();
    ensure!(guarded == want, "guarded consumer read {guarded:?}");

    let plain = tokio::task::block_in_place(|| read(&brokers, 50, 110, None))?;
    ensure!(
        plain == want,
        "the broker skips again: a plain consumer at offset 50 read {plain:?} (the gap guard covers it)"
    );
    Ok(())
}
