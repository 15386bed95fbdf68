//! The project's topics, and their idempotent creation.

use crate::args::KafkaArgs;
use crate::client::client_config;
use analytics_model::window::WindowArgs;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
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

/// Which of the project's topics to create, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// The events topic: delete policy with the given retention.
    Events { name: String, retention: Duration },
    /// The hourly topic: compacted.
    Hourly { name: String },
    /// The dead-letter topic: delete policy, 30 days.
    DeadLetter { name: String },
    /// A processor state changelog: delete policy with the given retention.
    Changelog { name: String, retention: Duration },
}

impl Topic {
    pub fn name(&self) -> &str {
        match self {
            Topic::Events { name, .. }
            | Topic::Hourly { name }
            | Topic::DeadLetter { name }
            | Topic::Changelog { name, .. } => name,
        }
    }

    /// Creation settings: `cleanup.policy` and, for a delete policy, `retention.ms`.
    fn settings(&self) -> Vec<(&'static str, String)> {
        const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(30 * 86_400);
        let delete = |retention: &Duration| {
            vec![
                ("cleanup.policy", "delete".to_owned()),
                ("retention.ms", retention.as_millis().to_string()),
            ]
        };
        match self {
            Topic::Events { retention, .. } | Topic::Changelog { retention, .. } => {
                delete(retention)
            }
            Topic::DeadLetter { .. } => delete(&DEAD_LETTER_RETENTION),
            Topic::Hourly { .. } => vec![("cleanup.policy", "compact".to_owned())],
        }
    }
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
    let mut backoff = analytics_runtime::backoff::Backoff::new(Duration::from_millis(200));
    loop {
        match ensure_topics(args, topics).await {
            Ok(()) => return true,
            Err(e) => tracing::warn!(error = %e, "cannot create topics yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = cancel.cancelled() => return false,
        }
    }
}

/// Names of the topics the broker knows. Asked before creating topics, so that a service
/// starting against an existing deployment sends no create request (brokers log a refused
/// create as an error).
async fn existing_topics(args: &KafkaArgs) -> Result<Vec<String>, TopicError> {
    let config = client_config(args, "analytics-admin");
    let metadata = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: BaseConsumer = config.create()?;
        let metadata = client.fetch_metadata(None, Duration::from_secs(10))?;
        Ok::<_, rdkafka::error::KafkaError>(
            metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.name().to_owned())
                .collect(),
        )
    })
    .await
    .expect("the metadata request does not panic")?;
    Ok(metadata)
}

/// Creates the given topics if they do not exist (an existing topic is left as it is).
pub async fn ensure_topics(args: &KafkaArgs, topics: &[Topic]) -> Result<(), TopicError> {
    let existing = existing_topics(args).await?;
    let topics: Vec<&Topic> = topics
        .iter()
        .filter(|t| !existing.iter().any(|e| e == t.name()))
        .collect();
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        client_config(args, "analytics-admin").create()?;
    let settings: Vec<_> = topics.iter().map(|t| t.settings()).collect();
    let specs: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&settings)
        .map(|(t, settings)| {
            settings.iter().fold(
                NewTopic::new(t.name(), args.topic_partitions, TopicReplication::Fixed(1)),
                |spec, (k, v)| spec.set(k, v),
            )
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
