//! Measurement, not a test of behaviour: how long a processor takes to restore a partition
//! holding a full day of state (24 hours × 100 000 users, a checkpoint every 5 s: about
//! 35 000 changelog records, 40 MB) when it reads the changelog from the real broker, with
//! the processor's own fence-and-read code. Run it with
//! `cargo test --release -p e2e --test restore_day -- --ignored --nocapture`.

use analytics_kafka::producer::Recovering;
use analytics_model::hour::HOUR_MS;
use anyhow::{ensure, Result};
use e2e::Stack;
use processor::restore::ChangelogIo;
use processor::state::Rules;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureRecord;
use rdkafka::ClientConfig;
use std::sync::Arc;
use std::time::Instant;

const TOPIC: &str = "restore-day";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --release -p e2e --test restore_day -- --ignored --nocapture"]
async fn a_day_of_state_restores_from_the_broker() -> Result<()> {
    let stack = Stack::start()?;
    let brokers = stack.kafka_brokers();
    stack.create_topic(TOPIC, 1).await?;
    let mut producer_config = ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "20");
    let producer = Arc::new(Recovering::new(
        producer_config,
        DefaultClientContext,
        processor::metrics::Metrics::default().producer_replacements,
    )?);
    let start = analytics_model::clock::now().hour().plus_hours(-23);
    let log = processor::changelog::synthetic_log(start, 24, 100_000, 720);
    let bytes: usize = log.iter().map(Vec::len).sum();
    let written = Instant::now();
    for chunk in log.chunks(5000) {
        let mut acks = Vec::new();
        for r in chunk {
            let record = FutureRecord::to(TOPIC).partition(0).key("0").payload(r);
            acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for a in acks {
            a.delivered().await?;
        }
    }
    eprintln!(
        "wrote {} records, {:.1} MB in {:.1} s",
        log.len(),
        bytes as f64 / 1e6,
        written.elapsed().as_secs_f64()
    );

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "restore-day")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set(
            "fetch.wait.max.ms",
            analytics_kafka::client::FETCH_WAIT_MAX_MS,
        )
        .create()?;
    let io = ChangelogIo {
        producer,
        reader,
        topic: TOPIC.to_owned(),
        owner: "measure".to_owned(),
        runtime: tokio::runtime::Handle::current(),
    };
    let rules = Rules::new(24 * HOUR_MS, 300_000, 24 * HOUR_MS);
    // As in the processor's rebalance callback: fence, then read and fold up to the fence.
    let (seconds, folded) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let fences = io.fence(&[0])?;
        let folded = io.read(&fences, &rules)?;
        Ok::<_, processor::restore::RestoreError>((t.elapsed().as_secs_f64(), folded))
    })
    .await??;
    let fold = &folded[&0].fold;
    let pairs: usize = fold.hours.values().map(|h| h.users.len()).sum();
    eprintln!(
        "restored {} records, {:.1} MB, {pairs} (hour, user) pairs from the broker in {seconds:.1} s",
        fold.records,
        fold.bytes as f64 / 1e6
    );
    ensure!(fold.checkpoint.is_some() && pairs > 2_000_000);
    Ok(())
}
