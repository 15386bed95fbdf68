//! A rolling upgrade writes events in two formats for a while: JSON (formats 0 and 1) from
//! commands not upgraded yet, binary (format 2) from upgraded ones. The processor reads a
//! topic that holds both, interleaved in every partition, and every hour is exact; an
//! event re-sent with its id in the other format counts once.

use analytics_model::event::{Event, EventKind};
use analytics_model::hour::Millis;
use anyhow::Result;
use e2e::forensics::Answers;
use e2e::workload::{dataset, post_all, Post, Rng, Truth, HOUR};
use e2e::{Pipeline, PipelineOptions, Stack};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::time::Duration;

/// How [`produce_mixed`] writes the JSON ones.
#[derive(Clone, Copy)]
enum Json {
    /// Format 1, with its `"v":1`.
    Versioned,
    /// Format 0: no `v`, as the first releases wrote it.
    Oldest,
}

/// Writes `posts` straight to the events topic as the command does (key = user, its
/// partitioner, the receipt time as the record's timestamp), alternately in binary and in
/// JSON, starting with binary when `binary_first`.
async fn produce_mixed(
    brokers: &str,
    posts: &[Post],
    binary_first: bool,
    json: Json,
) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut acks = Vec::new();
    for (i, p) in posts.iter().enumerate() {
        let now = analytics_model::clock::now_ms();
        let event = Event {
            timestamp: Millis(p.ts),
            user: p.user.clone(),
            kind: if p.click {
                EventKind::Click
            } else {
                EventKind::Impression
            },
            received_at: Millis(now),
            id: p.id.clone(),
        };
        let payload = match ((i % 2 == 0) == binary_first, json) {
            (true, _) => event.encode(),
            (false, Json::Versioned) => event.encode_json(),
            (false, Json::Oldest) => String::from_utf8(event.encode_json())?
                .replacen("\"v\":1,", "", 1)
                .into_bytes(),
        };
        let record = FutureRecord::to("analytics.events")
            .key(&p.user)
            .payload(&payload)
            .timestamp(now);
        acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for a in acks {
        a.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_holding_json_and_binary_events_counts_both_exactly() -> Result<()> {
    let stack = Stack::start()?;
    let pipeline = Pipeline::start(&stack, PipelineOptions::default()).await?;
    let now = analytics_model::clock::now_ms();
    let h0 = now.div_euclid(HOUR) * HOUR;
    let hours: Vec<i64> = (0..=2).map(|b| h0 - b * HOUR).collect();
    let mut rng = Rng::seeded(0xf0_2a_a7);
    let mut truth = Truth::default();

    // Through the command (binary), and straight to the topic in both formats, interleaved.
    let posted = dataset(&mut rng, 600, &[0, 0, 1, 2], now);
    post_all(&pipeline.command.addr(), &posted, 4).await?;
    let mut written = dataset(&mut rng, 1_200, &[0, 0, 1, 2], now);
    // A hundred events with ids, then each re-sent in the other format: counted once (the
    // pair is the same whatever the format).
    for (i, p) in written.iter_mut().take(100).enumerate() {
        p.id = Some(format!("mixed-{i}"));
    }
    let brokers = stack.kafka_brokers();
    produce_mixed(&brokers, &written[..100], false, Json::Versioned).await?;
    produce_mixed(&brokers, &written[..100], true, Json::Versioned).await?;
    produce_mixed(&brokers, &written[100..700], true, Json::Oldest).await?;
    produce_mixed(&brokers, &written[700..], false, Json::Versioned).await?;
    posted.iter().chain(&written).for_each(|p| truth.add(p));

    let answers = Answers {
        query: &pipeline.query,
        hours: &hours,
    };
    answers
        .exact(
            &stack,
            &truth,
            Duration::from_secs(60),
            "JSON and binary events",
        )
        .await?;
    Ok(())
}
