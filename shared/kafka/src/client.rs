//! The settings every Kafka client of the project starts from, and the consumer lag it
//! reports.

use crate::args::KafkaArgs;
use rdkafka::config::ClientConfig;

/// Client configuration every Kafka client of the project starts from.
pub fn client_config(args: &KafkaArgs, client_id: &str) -> ClientConfig {
    let mut c = base_config(args, client_id);
    for (k, v) in &args.kafka_options {
        c.set(k, v);
    }
    c
}

/// Longest time a fetch waits on the broker for data. The local broker (nisshi 0.8.1) holds a
/// waiting fetch to about half of this even when data arrive meanwhile (`loadgen
/// fetch-latency`: write to read p50 / p99 of 208 / 260 ms at 500 ms, 31 / 56 ms at 100 ms,
/// 4.5 / 13 ms at 10 ms), so every consumer on the way of an event (processor, materializer)
/// adds that; at 20 ms the freshness p50 of `make bench` went from 145 to 48 ms
/// (docs/benchmarks-notes.md). On Apache Kafka the broker answers as soon as data arrive, so
/// this only sets the rate of empty fetches while idle: 50 a second per consumer.
pub const FETCH_WAIT_MAX_MS: &str = "20";

/// How long librdkafka waits before fetching again once its local queue is full
/// (`queued.min.messages` or `queued.max.messages.kbytes` reached). Its default, 1 s, made a
/// consumer that drains the queue slower than the broker fills it idle most of the time: the
/// processor read a backlog at 0.17 of a bare consumer's rate while using a tenth of a core,
/// and at 0.9 to 1.1 of it with 10 ms (docs/benchmarks-notes.md). Every consumer of the
/// project, and the benchmark's bare consumer, fetch with it.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// Records librdkafka keeps fetched ahead per partition (its default is 100 000). With the
/// backoff above the fetcher tops the queue up at once, so a smaller one costs the processor
/// nothing in speed, and its buffers were most of the processor's memory growth over a
/// backlog: some 40 of 75 bytes per tracked (hour, user) pair (docs/benchmarks-notes.md).
pub const QUEUED_MIN_MESSAGES: &str = "20000";

/// [`client_config`] with the consumer defaults of the project (`--kafka-option` still wins).
pub fn consumer_config(args: &KafkaArgs, client_id: &str) -> ClientConfig {
    let mut c = base_config(args, client_id);
    c.set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .set("queued.min.messages", QUEUED_MIN_MESSAGES);
    for (k, v) in &args.kafka_options {
        c.set(k, v);
    }
    c
}

fn base_config(args: &KafkaArgs, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.kafka_brokers)
        .set("client.id", client_id)
        .set("socket.keepalive.enable", "true")
        // Reconnect quickly after a broker restart.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        // A metadata request never creates a topic (a producer's would, on a broker that
        // auto-creates): the services create theirs with the partition count and policy they
        // need ([`crate::topics`]), and an events topic created first with the broker's
        // default partition count would break exact unique counts for good.
        .set("allow.auto.create.topics", "false");
    c
}

/// How often librdkafka reports statistics (consumer lag); see [`record_lag`].
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// Sets `gauge{partition}` to the consumer lag librdkafka reports for `topic`.
pub fn record_lag(stats: &rdkafka::Statistics, topic: &str, gauge: &prometheus::IntGaugeVec) {
    if let Some(t) = stats.topics.get(topic) {
        for (p, s) in &t.partitions {
            if *p >= 0 && s.consumer_lag >= 0 {
                gauge
                    .with_label_values(&[&p.to_string()])
                    .set(s.consumer_lag);
            }
        }
    }
}
