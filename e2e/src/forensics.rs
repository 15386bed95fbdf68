//! Where was an event lost? When an hour does not match the ground truth, compare it stage by
//! stage: the driver's truth, the events topic on the broker, the partials on the hourly
//! topic, and the rows in PostgreSQL, per source partition. The report names the first stage
//! that disagrees.

use crate::workload::Truth;
use crate::{Service, Stack};
use analytics_model::event::{EventKind, EventRecord, Partial};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Totals of one (hour, partition) recomputed from the events topic.
#[derive(Default)]
struct Counted {
    clicks: u64,
    impressions: u64,
    users: HashSet<String>,
    last_offset: i64,
}

/// Reads every partition of `topic` from the beginning to its high watermark.
fn read_topic(
    brokers: &str,
    topic: &str,
    mut each: impl FnMut(i32, i64, &[u8], &[u8]),
) -> Result<String, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-forensics")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    let mut notes = String::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(|e| e.to_string())?;
        if low > 0 {
            let _ = writeln!(notes, "  {topic}[{}] starts at offset {low}", p.id());
        }

        if high > low {
            remaining.insert(p.id(), (high, low));
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                .map_err(|e| e.to_string())?;
        }
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut idle_after_end: Option<Instant> = None;
    loop {
        if Instant::now() > deadline {
            break;
        }
        if remaining.is_empty() {
            // The high watermark the broker reported may lag behind the log (Tansu 0.6.0
            // reports one less now and then): read on until the partitions stay quiet.
            let t = *idle_after_end.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        idle_after_end = None;
        let msg = msg.map_err(|e| e.to_string())?;
        let p = msg.partition();
        let mut beyond = (0, msg.offset());
        let (high, expected) = match remaining.get_mut(&p) {
            Some(r) => r,
            None => {
                let _ = writeln!(
                    notes,
                    "  {topic}[{p}]: offset {} beyond the reported high watermark",
                    msg.offset()
                );

                &mut beyond
            }
        };
        if msg.offset() != *expected {
            let _ = writeln!(
                notes,
                "  {topic}[{p}]: offset {} where {} was expected",
                msg.offset(),
                expected
            );
        }
        *expected = msg.offset() + 1;
        each(
            p,
            msg.offset(),
            msg.key().unwrap_or_default(),
            msg.payload().unwrap_or_default(),
        );
        if msg.offset() + 1 >= *high {
            remaining.remove(&p);
        }
    }
    if !remaining.is_empty() {
        let _ = writeln!(
            notes,
            "  {topic}: partitions {remaining:?} not read to the end"
        );
    }
    Ok(notes)
}

/// A report on every hour of `hours` whose truth differs from what the stages hold.
pub fn explain(stack: &Stack, truth: &Truth, hours: &[i64]) -> String {
    match explain_inner(stack, truth, hours) {
        Ok(s) => s,
        Err(e) => format!("forensics failed: {e}"),
    }
}

fn explain_inner(stack: &Stack, truth: &Truth, hours: &[i64]) -> Result<String, String> {
    let brokers = stack.kafka_brokers();
    let mut out = String::from("forensics:\n");
    let mut events: BTreeMap<(i64, i32), Counted> = BTreeMap::new();
    let notes = read_topic(&brokers, "analytics.events", |p, offset, _, payload| {
        if let Ok(e) = EventRecord::decode(payload).map(EventRecord::into_event) {
            let hour = e.timestamp.hour().ms();
            let c = events.entry((hour, p)).or_default();
            match e.kind {
                EventKind::Click => c.clicks += 1,
                EventKind::Impression => c.impressions += 1,
            }
            c.users.insert(e.user);
            c.last_offset = offset;
        }
    })?;
    out.push_str(&notes);
    let mut partials: BTreeMap<(i64, i32), Partial> = BTreeMap::new();
    let notes = read_topic(&brokers, "analytics.hourly", |_, _, _, payload| {
        if let Ok(p) = Partial::decode(payload) {
            let e = partials.entry((p.hour.ms(), p.partition)).or_insert(p);
            if p.offset >= e.offset {
                *e = p;
            }
        }
    })?;
    out.push_str(&notes);
    for &hour in hours {
        let want = truth.totals(hour);
        let in_topic = events.range((hour, i32::MIN)..=(hour, i32::MAX));
        let mut users = HashSet::new();
        let (mut clicks, mut impressions) = (0, 0);
        for (_, c) in in_topic.clone() {
            users.extend(c.users.iter().cloned());
            clicks += c.clicks;
            impressions += c.impressions;
        }
        let broker = [users.len() as u64, clicks, impressions];
        let rows: BTreeMap<i32, [i64; 4]> = stack
            .psql(&format!(
                "SELECT source_partition, unique_users, clicks, impressions, source_offset \
                 FROM hourly_partials WHERE hour_ms = {hour}"
            ))
            .map_err(|e| e.to_string())?
            .lines()
            .filter_map(|l| {
                let v: Vec<i64> = l.split('|').filter_map(|x| x.parse().ok()).collect();
                (v.len() == 5).then(|| (v[0] as i32, [v[1], v[2], v[3], v[4]]))
            })
            .collect();
        let mut per_partition = String::new();
        for ((_, p), c) in in_topic {
            let topic = [c.users.len() as i64, c.clicks as i64, c.impressions as i64];
            let hourly = partials.get(&(hour, *p)).map(|x| {
                [
                    x.unique_users as i64,
                    x.clicks as i64,
                    x.impressions as i64,
                    x.offset,
                ]
            });
            let pg = rows.get(p).copied();
            let agrees = |x: Option<[i64; 4]>| x.is_some_and(|x| x[..3] == topic);
            if !agrees(hourly) || !agrees(pg) {
                let _ = writeln!(
                    per_partition,
                    "    partition {p}: events topic {topic:?} (last offset {}), hourly topic {hourly:?}, PostgreSQL {pg:?}",
                    c.last_offset
                );
            }
        }
        if broker != want || !per_partition.is_empty() {
            let _ = writeln!(
                out,
                "  hour {hour}: truth {want:?}, events topic {broker:?}\n{per_partition}"
            );
        }
    }
    Ok(out)
}

/// The query service's answers for a set of hours: what a test compares with its truth.
pub struct Answers<'a> {
    pub query: &'a Service,
    pub hours: &'a [i64],
}

impl Answers<'_> {
    /// Waits until every hour equals `truth` ([`crate::workload::wait_exact`]); on failure,
    /// appends an [`explain`] report of where each wrong hour's events went.
    pub async fn exact(
        &self,
        stack: &Stack,
        truth: &Truth,
        within: Duration,
        what: &str,
    ) -> anyhow::Result<()> {
        let addr = self.query.addr();
        match crate::workload::wait_exact(&addr, truth, self.hours, within, what).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let report = tokio::task::block_in_place(|| explain(stack, truth, self.hours));
                Err(e.context(report))
            }
        }
    }
}
