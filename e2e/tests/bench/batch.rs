//! Sections 7 and 8: batch ingest over HTTP, and the cost of deduplication in the
//! processor's state (in process).

use anyhow::{ensure, Result};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Concurrent batch clients in section 7, and events per batch.
pub const BATCH_CLIENTS: usize = 4;
pub const BATCH_EVENTS: usize = 1_000;

/// What one batch run measured.
pub struct BatchRun {
    /// Acknowledged events per second.
    pub rate: f64,
    /// Body bytes on the wire per event (compressed when the batches were).
    pub bytes_per_event: f64,
}

/// Events per batch client for `seconds`, gzipped (`Content-Encoding: gzip`, level 6, as a
/// browser's `CompressionStream` does) when `gzip`.
pub async fn batch_run(
    addr: &str,
    clients: usize,
    events: usize,
    seconds: u64,
    run: u64,
    gzip: bool,
) -> Result<BatchRun> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let addr = addr.to_owned();
            tokio::spawn(async move {
                let mut client = e2e::http::Client::connect(&addr).await?;
                let (mut accepted, mut bytes) = (0u64, 0u64);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let now = analytics_model::clock::now_ms();
                    let mut body = String::with_capacity(events * 80);
                    for _ in 0..events {
                        n += 1;
                        let _ = writeln!(
                            body,
                            r#"{{"timestamp":{now},"user":"b{run}-{c}-{}","event":"click","id":"{run}-{c}-{n}"}}"#,
                            n % 10_000
                        );
                    }
                    let r = if gzip {
                        let zipped = gzipped(body.as_bytes())?;
                        bytes += zipped.len() as u64;
                        let headers = [
                            ("Content-Type", "application/x-ndjson"),
                            ("Content-Encoding", "gzip"),
                        ];
                        client
                            .request_with_body("POST", "/analytics/batch", &headers, &zipped)
                            .await?
                    } else {
                        bytes += body.len() as u64;
                        client.post_batch(body.as_bytes()).await?
                    };
                    ensure!(r.status == 200, "batch answered {} {}", r.status, r.body);
                    accepted += events as u64;
                }
                Ok::<_, anyhow::Error>((accepted, bytes))
            })
        })
        .collect();
    let (mut total, mut bytes) = (0, 0);
    for t in tasks {
        let (events, sent) = t.await??;
        total += events;
        bytes += sent;
    }
    Ok(BatchRun {
        rate: total as f64 / started.elapsed().as_secs_f64(),
        bytes_per_event: bytes as f64 / total.max(1) as f64,
    })
}

fn gzipped(body: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body)?;
    Ok(gz.finish()?)
}

/// Events through the processor state in section 8.
pub const DEDUP_EVENTS: u64 = 2_000_000;

pub struct DedupCosts {
    pub without_ids: f64,
    pub with_ids: f64,
    pub ids: usize,
    pub bytes_per_id: f64,
}

/// The same events through a fresh partition state, without then with an id each.
pub fn dedup_costs() -> DedupCosts {
    use analytics_model::event::EventKind;
    use analytics_model::hour::Millis;
    use processor::seen::pair_hash;
    use processor::state::{user_hash, EventAt, PartitionState, Rules, StartPoint};
    const HOUR: i64 = 3_600_000;
    let rules = Rules::new(24 * HOUR, 300_000, 24 * HOUR);
    let t0 = 1_700_000_000_000i64 / HOUR * HOUR;
    let users: Vec<(String, u128)> = (0..100_000)
        .map(|i| {
            let u = format!("user-{i}");
            let h = user_hash(&u);
            (u, h)
        })
        .collect();
    let ids: Vec<String> = (0..DEDUP_EVENTS).map(|i| format!("ev-{i}")).collect();
    let run = |with_ids: bool| {
        let mut s = PartitionState::new(0, StartPoint::BEGINNING);
        let started = Instant::now();
        for i in 0..DEDUP_EVENTS as i64 {
            let (user, hash) = &users[(i as usize * 7919) % users.len()];
            let ts = Millis(t0 + i / 100);
            let pair = with_ids.then(|| pair_hash(user, &ids[i as usize]));
            let event = EventAt {
                offset: i,
                received: ts,
                time: ts,
                user: *hash,
                kind: EventKind::Click,
                pair,
            };
            s.apply(&rules, event);
        }
        let rate = DEDUP_EVENTS as f64 / started.elapsed().as_secs_f64();
        (rate, s.remembered_pairs(), s.pair_table_bytes())
    };
    let (without_ids, _, _) = run(false);
    let (with_ids, ids, bytes) = run(true);
    DedupCosts {
        without_ids,
        with_ids,
        ids,
        bytes_per_id: bytes as f64 / ids.max(1) as f64,
    }
}
