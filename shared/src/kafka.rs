//! Kafka helpers: base client configuration and idempotent topic creation.

use crate::config::{KafkaArgs, WindowArgs};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot reach Kafka to create topics: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Client configuration every Kafka client of the project starts from.
pub fn client_config(args: &KafkaArgs, client_id: &str) -> ClientConfig {
    let mut c = base_config(args, client_id);
    for (k, v) in &args.kafka_options {
        c.set(k, v);
    }
    c
}

/// Longest time a fetch waits on the broker for data. Lower than librdkafka's 500 ms because
/// the local broker (Tansu 0.6.0) holds every fetch for up to this long (half of it from
/// 250 ms up) even when it has data, which would add a quarter of a second per hop of the
/// pipeline; not lower, because each fetch makes Tansu list the partition's stored batches
/// (at 20 ms an idle `make run` kept its broker at 80% of a core). On Apache Kafka the broker
/// answers as soon as data arrives, so this only sets the rate of empty fetches while idle.
pub const FETCH_WAIT_MAX_MS: &str = "100";

/// [`client_config`] with the consumer defaults of the project (`--kafka-option` still wins).
pub fn consumer_config(args: &KafkaArgs, client_id: &str) -> ClientConfig {
    let mut c = base_config(args, client_id);
    c.set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
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
        .set("reconnect.backoff.max.ms", "2000");
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

/// Decides when a group member should leave and rejoin its consumer group: when it has held
/// no partition for too long, or when some partition of the group (anyone's) has lag while
/// its committed offset has not moved for too long. A workaround for brokers that do not
/// rebalance after a member crashed or froze (Tansu 0.6.0); leaving the group makes such a
/// broker drop the silent member.
#[derive(Debug)]
pub struct RejoinWatchdog {
    limit: Option<Duration>,
    idle_since: Option<std::time::Instant>,
    /// Per partition: committed offset and when it last changed.
    progress: std::collections::HashMap<i32, (i64, std::time::Instant)>,
    last_scan: Option<std::time::Instant>,
}

impl RejoinWatchdog {
    /// `limit` zero disables the watchdog.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit: (!limit.is_zero()).then_some(limit),
            idle_since: None,
            progress: Default::default(),
            last_scan: None,
        }
    }

    /// Call regularly with whether the member holds no partition; true means "rejoin now".
    pub fn should_rejoin(&mut self, unassigned: bool) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        match (unassigned, self.idle_since) {
            (false, _) => self.idle_since = None,
            (true, None) => self.idle_since = Some(std::time::Instant::now()),
            (true, Some(t)) if t.elapsed() >= limit => {
                tracing::warn!(
                    after_secs = limit.as_secs(),
                    "no partition assigned for too long: leaving and rejoining the group"
                );
                self.restart_clocks();
                return true;
            }
            (true, Some(_)) => {}
        }
        false
    }

    fn restart_clocks(&mut self) {
        self.idle_since = None;
        self.progress.clear();
    }

    /// Checks (at most every `limit / 2`, blocking on the broker) whether a partition of
    /// `topic` has lag while its group offset has not moved for three times `limit`; true
    /// means "rejoin".
    pub fn group_stalled<
        C: rdkafka::consumer::Consumer<X>,
        X: rdkafka::consumer::ConsumerContext,
    >(
        &mut self,
        consumer: &C,
        topic: &str,
    ) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        if self.last_scan.is_some_and(|t| t.elapsed() < limit / 2) {
            return false;
        }
        self.last_scan = Some(std::time::Instant::now());
        let timeout = Duration::from_secs(2);
        let Ok(md) = consumer.fetch_metadata(Some(topic), timeout) else {
            return false;
        };
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return false;
        };
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
        let Ok(committed) = consumer.committed_offsets(tpl, timeout) else {
            return false;
        };
        let now = std::time::Instant::now();
        for e in committed.elements_for_topic(topic) {
            let p = e.partition();
            let rdkafka::Offset::Offset(c) = e.offset() else {
                continue;
            };
            let Ok((_, high)) = consumer.fetch_watermarks(topic, p, timeout) else {
                continue;
            };
            let entry = self.progress.entry(p).or_insert((c, now));
            if entry.0 != c || c >= high {
                *entry = (c, now);
            } else if now.duration_since(entry.1) >= 3 * limit {
                tracing::warn!(
                    partition = p,
                    committed = c,
                    high,
                    "partition not progressing: leaving and rejoining the group"
                );
                self.restart_clocks();
                return true;
            }
        }
        false
    }
}

/// Which of the project's topics to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// The events topic, with its retention.
    Events {
        retention: Duration,
    },
    Hourly,
    DeadLetter,
    /// A processor state changelog: delete policy with the given retention.
    Changelog {
        name: String,
        retention: Duration,
    },
}

/// Retention of the events topic: the lateness window plus a week, so a processor may be
/// down for up to a week and still replay everything it needs.
pub fn events_retention(window: &WindowArgs) -> Duration {
    window.max_event_age + Duration::from_secs(7 * 86_400)
}

/// [`ensure_topics`], retried with backoff until it succeeds; false if `cancel` fired first.
pub async fn ensure_topics_retrying(
    args: &KafkaArgs,
    topics: &[Topic],
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        match ensure_topics(args, topics).await {
            Ok(()) => return true,
            Err(e) => tracing::warn!(error = %e, "cannot create topics yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Creates the given topics if they do not exist (an existing topic is left as it is).
pub async fn ensure_topics(args: &KafkaArgs, topics: &[Topic]) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(args, "analytics-admin").create()?;
    let retentions: Vec<String> = topics
        .iter()
        .map(|t| match t {
            Topic::Events { retention } | Topic::Changelog { retention, .. } => {
                retention.as_millis().to_string()
            }
            _ => String::new(),
        })
        .collect();
    let specs: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&retentions)
        .map(|(t, events_retention)| match t {
            Topic::Events { .. } => NewTopic::new(
                &args.events_topic,
                args.topic_partitions,
                TopicReplication::Fixed(1),
            )
            .set("cleanup.policy", "delete")
            .set("retention.ms", events_retention),
            Topic::Hourly => NewTopic::new(
                &args.hourly_topic,
                args.topic_partitions,
                TopicReplication::Fixed(1),
            )
            .set("cleanup.policy", "compact"),
            Topic::Changelog { name, .. } => {
                NewTopic::new(name, args.topic_partitions, TopicReplication::Fixed(1))
                    .set("cleanup.policy", "delete")
                    .set("retention.ms", events_retention)
            }
            Topic::DeadLetter => NewTopic::new(
                &args.dead_letter_topic,
                args.topic_partitions,
                TopicReplication::Fixed(1),
            )
            .set("cleanup.policy", "delete")
            .set("retention.ms", "2592000000"),
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(specs.iter(), &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_fires_only_after_a_continuous_idle_period() {
        let mut off = RejoinWatchdog::new(Duration::ZERO);
        assert!(!off.should_rejoin(true));
        let mut w = RejoinWatchdog::new(Duration::from_millis(30));
        assert!(!w.should_rejoin(true));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!w.should_rejoin(false), "an assignment resets the clock");
        assert!(!w.should_rejoin(true));
        std::thread::sleep(Duration::from_millis(40));
        assert!(w.should_rejoin(true));
        assert!(!w.should_rejoin(true), "the clock restarts after a rejoin");
    }
}
