//! The two-phase flush of [`Pipeline`]: partials, changelog deltas and dead letters, then
//! checkpoints, then the offset commit, each step only once the one before is acknowledged
//! (the delivery guarantee in [`super`]'s module doc rests on that order, and the tests below
//! hold it against a fake publisher).

use super::{Commit, Pipeline};
use crate::changelog::{Record, MAX_USERS_PER_DELTA};
use crate::publish::{publish_retrying, Destination, Out};
use crate::rebalance::ProcessorContext;
use crate::restore;
use crate::state::PartitionState;
use analytics_model::event::Partial;
use analytics_runtime::metrics::observe_since;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one flush takes from the partitions' state.
#[derive(Default)]
struct Taken {
    /// The partials of the hours that changed (also in `out`).
    partials: Vec<Partial>,
    /// The first phase: partials, changelog deltas and ids, dead letters.
    out: Vec<Out>,
    /// The second phase: a checkpoint per partition that moved on, with its next offset.
    checkpoints: Vec<(i32, i64, Out)>,
    commits: Vec<Commit>,
}

impl Pipeline {
    /// Publishes what changed in two phases, then commits and evicts:
    /// 1. partials (hourly topic), changelog deltas and dead letters, all acknowledged;
    /// 2. a changelog checkpoint per partition that moved on, acknowledged.
    ///
    /// A checkpoint therefore never names an offset whose partials are not durable, and an
    /// offset is committed (by `commit`, which says whether it succeeded) only once both
    /// phases are acknowledged.
    pub(super) fn flush(
        &mut self,
        cancel: &CancellationToken,
        last: bool,
        commit: impl FnOnce(&[Commit]) -> bool,
    ) {
        let started = Instant::now();
        let checkpoint_due = last || self.last_checkpoint.elapsed() >= self.checkpoint_interval;
        let mut taken = self.take(checkpoint_due);
        let dead_letters = self.pending_dead_letters.iter();
        taken
            .out
            .extend(dead_letters.map(|(k, body)| Out::dead_letter(k.clone(), body.clone())));
        if taken.out.is_empty() && taken.checkpoints.is_empty() && taken.commits.is_empty() {
            self.after_flush();
            return;
        }
        if !self.publish_phases(cancel, &taken, checkpoint_due) {
            return;
        }
        if !taken.commits.is_empty() && commit(&taken.commits) {
            for c in &taken.commits {
                self.committed.insert(c.partition, c.next_offset);
            }
        }
        self.metrics
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        self.after_flush();
    }

    /// Takes from every partition what changed since the last flush: partials always, the
    /// changelog's deltas, ids and checkpoint when one is due, and the offset to commit.
    fn take(&mut self, checkpoint_due: bool) -> Taken {
        let owned = self.partitions.owned.lock().expect("not poisoned").clone();
        if owned != self.committed_for {
            // Commits are asynchronous and may have failed around a rebalance: after any
            // change of assignment, commit every owned partition again.
            self.committed.clear();
            self.committed_for = owned.clone();
        }
        let mut taken = Taken::default();
        let mut states = self.partitions.states.lock().expect("not poisoned");
        for s in states.values_mut() {
            s.take_dirty(&mut taken.partials);
            // Only an owner writes to a partition's changelog: a revoked partition keeps
            // its unlogged changes, in case it comes back unfenced.
            if !owned.contains(&s.partition) {
                continue;
            }
            if checkpoint_due {
                take_changelog(s, &mut taken);
            }
            if s.restored() && self.committed.get(&s.partition) != Some(&s.next_offset) {
                taken.commits.push(Commit {
                    partition: s.partition,
                    next_offset: s.next_offset,
                    watermark: s.watermark,
                });
            }
        }
        taken.out.extend(taken.partials.iter().map(Out::partial));
        taken
    }

    /// Publishes the first phase, then the second, each retried until acknowledged or
    /// `cancel`; false (nothing to checkpoint or commit) if either was not acknowledged.
    fn publish_phases(
        &mut self,
        cancel: &CancellationToken,
        taken: &Taken,
        checkpoint_due: bool,
    ) -> bool {
        if !publish_retrying(self.publisher.as_mut(), &taken.out, cancel) {
            // Not acknowledged: nothing is checkpointed or committed; the next owner replays.
            self.restore_dirty(&taken.partials);
            return false;
        }
        self.pending_dead_letters.clear();
        self.metrics
            .partials_published
            .inc_by(taken.partials.len() as u64);
        let now = analytics_model::clock::now_ms();
        for p in &taken.partials {
            observe_since(&self.metrics.hop_published, p.newest_received_at.0, now);
        }
        let phase2: Vec<Out> = taken
            .checkpoints
            .iter()
            .map(|(_, _, o)| o.clone())
            .collect();
        if !phase2.is_empty() && !publish_retrying(self.publisher.as_mut(), &phase2, cancel) {
            return false;
        }
        if checkpoint_due {
            self.last_checkpoint = Instant::now();
        }
        let written: u64 = taken
            .out
            .iter()
            .chain(&phase2)
            .filter(|o| matches!(o.destination, Destination::Changelog(_)))
            .map(|o| o.payload.len() as u64)
            .sum();
        self.metrics.changelog_written_bytes.inc_by(written);
        let mut states = self.partitions.states.lock().expect("not poisoned");
        for (p, next, _) in &taken.checkpoints {
            if let Some(s) = states.get_mut(p) {
                s.checkpointed = *next;
            }
        }
        true
    }

    fn restore_dirty(&self, partials: &[Partial]) {
        let mut states = self.partitions.states.lock().expect("not poisoned");
        for p in partials {
            if let Some(s) = states.get_mut(&p.partition) {
                s.mark_dirty([p.hour]);
            }
        }
    }

    fn after_flush(&mut self) {
        let mut states = self.partitions.states.lock().expect("not poisoned");
        let mut assigned_at = self.partitions.assigned_at.lock().expect("not poisoned");
        for s in states.values_mut() {
            s.evict(&self.rules);
            let label = s.partition.to_string();
            self.metrics
                .open_hours
                .with_label_values(&[&label])
                .set(s.open_hours() as i64);
            self.metrics
                .tracked_users
                .with_label_values(&[&label])
                .set(s.tracked_users() as i64);
            self.metrics
                .remembered_ids
                .with_label_values(&[&label])
                .set(s.remembered_pairs() as i64);
            if s.restored() {
                if let Some(t) = assigned_at.remove(&s.partition) {
                    let secs = t.elapsed().as_secs_f64();
                    self.metrics.restore_duration.observe(secs);
                    tracing::info!(
                        partition = s.partition,
                        seconds = secs,
                        "partition restored"
                    );
                }
            }
        }
    }
}

/// A partition's changelog records since the last checkpoint: its deltas and ids, and a
/// checkpoint if it moved on.
fn take_changelog(s: &mut PartitionState, taken: &mut Taken) {
    let mut deltas = Vec::new();
    s.take_deltas(&mut deltas);
    for delta in deltas {
        let record = Record::Delta {
            epoch: s.epoch,
            delta,
        };
        taken.out.push(Out::changelog(s.partition, record));
    }
    for (bucket, pairs) in s.take_pairs() {
        for chunk in pairs.chunks(MAX_USERS_PER_DELTA) {
            let record = Record::Ids {
                epoch: s.epoch,
                bucket,
                pairs: chunk.to_vec(),
            };
            taken.out.push(Out::changelog(s.partition, record));
        }
    }
    if s.epoch >= 0 && s.checkpointed != s.next_offset {
        let record = Record::Checkpoint {
            epoch: s.epoch,
            next_offset: s.next_offset,
            watermark: s.watermark,
            complete_from_hour: s.complete_from_hour(),
        };
        let out = Out::changelog(s.partition, record);
        taken.checkpoints.push((s.partition, s.next_offset, out));
    }
}

/// Commits the offsets of the events topic (asynchronously) with the partition watermark as
/// metadata; true if the commit was handed to the client.
pub(super) fn commit(consumer: &BaseConsumer<ProcessorContext>, commits: &[Commit]) -> bool {
    let topic = &consumer.context().topic;
    let mut tpl = TopicPartitionList::new();
    for c in commits {
        let mut e = tpl.add_partition(topic, c.partition);
        e.set_offset(Offset::Offset(c.next_offset))
            .expect("valid offset");
        e.set_metadata(restore::encode_metadata(c.watermark));
    }
    match consumer.commit(&tpl, CommitMode::Async) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "offset commit failed; will retry");
            false
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::pipeline::PipelineSettings;
    use crate::publish::Publish;
    use crate::rebalance::Partitions;
    use crate::state::{PartitionState, Rules, StartPoint};
    use analytics_model::event::EventKind;
    use analytics_model::hour::HOUR_MS;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const HOUR: i64 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;

    /// One entry per call: what was published (by kind) or committed.
    type Log = Arc<Mutex<Vec<String>>>;

    /// Records every publish call; fails every call while `fail` is set.
    struct FakePublisher {
        log: Log,
        fail: bool,
    }

    impl Publish for FakePublisher {
        fn publish(&mut self, records: &[Out]) -> bool {
            let kinds: Vec<&str> = records
                .iter()
                .map(|o| match o.destination {
                    Destination::Hourly => "partial",
                    Destination::DeadLetter => "dead_letter",
                    Destination::Changelog(_) => match Record::decode(&o.payload) {
                        Ok(Record::Checkpoint { .. }) => "checkpoint",
                        Ok(Record::Delta { .. }) => "delta",
                        Ok(Record::Ids { .. }) => "ids",
                        _ => "other",
                    },
                })
                .collect();
            self.log
                .lock()
                .unwrap()
                .push(format!("publish {}", kinds.join(",")));
            !self.fail
        }
    }

    fn ev(offset: i64, t: i64, user: u128, kind: EventKind) -> crate::state::EventAt {
        crate::state::EventAt {
            offset,
            received: analytics_model::hour::Millis(t),
            time: analytics_model::hour::Millis(t),
            user,
            kind,
            pair: None,
        }
    }

    fn rules() -> Rules {
        Rules::new(24 * HOUR_MS, 300_000, 24 * HOUR_MS)
    }

    /// A pipeline owning partition 0 (epoch 5) that has applied two events.
    fn pipeline(fail: bool, runtime: &tokio::runtime::Runtime) -> (Pipeline, Log) {
        let log = Log::default();
        let partitions = Arc::new(Partitions::new());
        let mut s = PartitionState::new(0, StartPoint::BEGINNING);
        s.epoch = 5;
        let t = HOUR + 1_000;
        s.apply(&rules(), ev(0, t, 1, EventKind::Click));
        s.apply(&rules(), ev(1, t, 2, EventKind::Impression));
        partitions.states.lock().unwrap().insert(0, s);
        partitions.owned.lock().unwrap().insert(0);
        let publisher = FakePublisher {
            log: log.clone(),
            fail,
        };
        let p = Pipeline::new(
            Box::new(publisher),
            partitions,
            rules(),
            Metrics::default(),
            PipelineSettings {
                events_topic: "events".into(),
                flush_interval: Duration::from_millis(100),
                checkpoint_interval: Duration::from_secs(5),
            },
            runtime.handle().clone(),
        );
        (p, log)
    }

    fn committing(log: &Log) -> impl FnOnce(&[Commit]) -> bool + '_ {
        move |c: &[Commit]| {
            let c: Vec<_> = c
                .iter()
                .map(|c| (c.partition, c.next_offset, c.watermark.0))
                .collect();
            log.lock().unwrap().push(format!("commit {c:?}"));
            true
        }
    }

    #[test]
    fn flush_publishes_then_checkpoints_then_commits() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut p, log) = pipeline(false, &rt);
        p.flush(&CancellationToken::new(), true, committing(&log));
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                "publish delta,partial".to_owned(),
                "publish checkpoint".to_owned(),
                format!("commit [(0, 2, {})]", HOUR + 1_000),
            ]
        );
        let states = p.partitions.states.lock().unwrap();
        assert_eq!(states[&0].checkpointed, 2, "the checkpoint is remembered");
    }

    #[test]
    fn partials_go_out_every_flush_and_the_changelog_only_when_a_checkpoint_is_due() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut p, log) = pipeline(false, &rt);
        // Not the last flush and the checkpoint interval has not passed.
        p.flush(&CancellationToken::new(), false, committing(&log));
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                "publish partial".to_owned(),
                format!("commit [(0, 2, {})]", HOUR + 1_000),
            ]
        );
    }

    #[test]
    fn nothing_is_checkpointed_or_committed_when_publishing_fails() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut p, log) = pipeline(true, &rt);
        let cancel = CancellationToken::new();
        cancel.cancel();
        p.flush(&cancel, true, committing(&log));
        assert_eq!(
            log.lock().unwrap().clone(),
            vec!["publish delta,partial".to_owned()],
            "one failed attempt, then given up: no checkpoint, no commit"
        );
        // The hour is dirty again: the next flush publishes it.
        let mut again = Vec::new();
        p.partitions
            .states
            .lock()
            .unwrap()
            .get_mut(&0)
            .unwrap()
            .take_dirty(&mut again);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].clicks, again[0].impressions), (1, 1));
    }

    #[test]
    fn dead_letters_go_with_the_first_phase_and_are_sent_once() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut p, log) = pipeline(false, &rt);
        p.pending_dead_letters.push((b"k".to_vec(), "{}".into()));
        p.flush(&CancellationToken::new(), false, committing(&log));
        p.flush(&CancellationToken::new(), false, committing(&log));
        let log = log.lock().unwrap().clone();
        assert_eq!(log[0], "publish partial,dead_letter");
        assert!(
            log[1..].iter().all(|l| !l.contains("dead_letter")),
            "{log:?}"
        );
    }
}
