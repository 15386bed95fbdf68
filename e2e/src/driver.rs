//! Load that keeps its own books, for the fault tests: POST drivers that record what the
//! command acknowledged, a reader that fails when any hour reads lower than before, and the
//! final comparison of every hour with those books.
//!
//! A `204` is counted for sure. A `503` whose body says the event was not stored (or that the
//! connection was refused) is counted as refused; any other `503`, and a request cut off without an answer, may or may not
//! count, so the expected value of an hour is a range: at least what was acknowledged, at
//! most that plus the uncertain events.
//!
//! Half the events carry an id and are re-sent after any answer but `204` (up to
//! [`MAX_ATTEMPTS`] times): once one copy is acknowledged the event counts exactly once, so
//! the pipeline's deduplication is checked by the same books, under every fault.

use crate::http::Client;
use crate::workload::{
    event, parse_body, total_spans, wait_totals, wait_until, Post, Rng, Truth, HOUR,
};
use crate::Stack;
use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How long a driver waits for an answer before it calls the request cut off.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// What the load drivers know.
#[derive(Default, Clone)]
pub struct Ledger {
    /// Answered `204`.
    pub sure: Truth,
    /// Answered a `503` that does not promise "not stored", or not answered at all.
    pub unsure: Truth,
    pub acknowledged: u64,
    /// `503` for events the command says it did not store.
    pub refused: u64,
    /// `503` for events that may or may not be stored.
    pub unacknowledged: u64,
    /// Requests without an answer within [`ANSWER_TIMEOUT`] (the connection broke or hung).
    pub cut_off: u64,
    /// `503` answers without a `Retry-After` header (must stay zero).
    pub missing_retry_after: u64,
    /// The slowest answer of any POST.
    pub slowest: Duration,
    /// Re-sends of events with ids after a refusal or an uncertain answer.
    pub retries: u64,
}

impl Ledger {
    /// Every POST was answered (none hung past [`ANSWER_TIMEOUT`] or lost its connection)
    /// and every `503` carried `Retry-After`.
    pub fn ensure_all_answered(&self) -> Result<()> {
        ensure!(
            self.cut_off == 0,
            "{} POSTs got no answer within {ANSWER_TIMEOUT:?}",
            self.cut_off
        );
        ensure!(
            self.missing_retry_after == 0,
            "{} 503s without Retry-After",
            self.missing_retry_after
        );
        Ok(())
    }

    /// The hours any event was posted to.
    pub fn hours(&self) -> BTreeSet<i64> {
        self.sure
            .hours
            .keys()
            .chain(self.unsure.hours.keys())
            .copied()
            .collect()
    }
}

/// POST drivers and a monotonic reader running until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ledger: Arc<Mutex<Ledger>>,
    drivers: Vec<JoinHandle<Result<()>>>,
    reader: JoinHandle<Result<()>>,
    /// The hours the reader watches: the current one and the six before it.
    pub watched: Vec<i64>,
}

impl Load {
    /// Starts `drivers` POST loops against `command` (95% of events for the current hour,
    /// the rest up to five hours late) and one reader against `query`.
    pub fn start(command: &str, query: &str, drivers: u64, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let drivers = (0..drivers)
            .map(|i| {
                tokio::spawn(drive(
                    command.to_owned(),
                    seed.wrapping_add(i),
                    stop.clone(),
                    ledger.clone(),
                ))
            })
            .collect();
        let h0 = analytics_model::clock::now_ms().div_euclid(HOUR) * HOUR;
        let watched: Vec<i64> = (-1..=6).map(|b| h0 - b * HOUR).collect();
        let reader = tokio::spawn(read_monotonic(
            query.to_owned(),
            watched.clone(),
            stop.clone(),
        ));
        Self {
            stop,
            ledger,
            drivers,
            reader,
            watched,
        }
    }

    /// Adds `connections` more POST loops for `duration`, recorded in the same books, then
    /// stops them: a burst of clients.
    pub async fn burst(
        &self,
        command: &str,
        connections: u64,
        duration: Duration,
        seed: u64,
    ) -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let extra: Vec<_> = (0..connections)
            .map(|i| {
                tokio::spawn(drive(
                    command.to_owned(),
                    seed.wrapping_add(i),
                    stop.clone(),
                    self.ledger.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for e in extra {
            e.await??;
        }
        Ok(())
    }

    /// A copy of the books so far.
    pub fn snapshot(&self) -> Ledger {
        self.ledger.lock().unwrap().clone()
    }

    /// Events acknowledged so far (without copying the books).
    pub fn acknowledged(&self) -> u64 {
        self.ledger.lock().unwrap().acknowledged
    }

    /// Waits until the books hold at least `at_least` acknowledged events (the load flows
    /// through the command), for at most `within`; `what` names the condition in the error.
    pub async fn wait_acknowledged(
        &self,
        at_least: u64,
        within: Duration,
        what: &str,
    ) -> Result<()> {
        crate::wait_for(what, within, || {
            let acknowledged = self.acknowledged();
            std::future::ready(if acknowledged >= at_least {
                Ok(Some(()))
            } else {
                Err(anyhow::anyhow!("{acknowledged} of {at_least} acknowledged"))
            })
        })
        .await
    }

    /// Stops the load; fails if any read went down.
    pub async fn finish(self) -> Result<Ledger> {
        self.stop.store(true, Ordering::Relaxed);
        for d in self.drivers {
            d.await?.context("a POST driver")?;
        }
        self.reader.await?.context("monotonic reads")?;
        let ledger = self.ledger.lock().unwrap().clone();
        Ok(ledger)
    }
}

/// How often a driver re-sends an event with an id before it gives up on it.
const MAX_ATTEMPTS: u32 = 50;

/// One attempt at a POST.
enum Outcome {
    Acknowledged,
    /// A `503` saying the event was not stored, or the connection limit.
    Refused,
    /// A `503` that does not promise "not stored", or no answer at all.
    Unsure,
}

async fn drive(
    addr: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<()> {
    let mut rng = Rng::seeded(seed);
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let back = if rng.below(100) < 95 {
            0
        } else {
            1 + rng.below(5) as i64
        };
        let mut post: Post = event(&mut rng, back, analytics_model::clock::now_ms());
        // Half the events carry an id, and those are re-sent until acknowledged: each must
        // count exactly once however many copies reached the broker.
        n += 1;
        if rng.below(2) == 0 {
            post.id = Some(format!("d{seed}-{n}"));
        }
        let mut uncertain = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = attempt(&addr, &mut client, &post, &ledger).await?;
            let retry =
                post.id.is_some() && attempts < MAX_ATTEMPTS && !stop.load(Ordering::Relaxed);
            match outcome {
                Outcome::Acknowledged => {
                    ledger.lock().unwrap().sure.add(&post);
                    break;
                }
                Outcome::Refused if !retry => {
                    if uncertain {
                        ledger.lock().unwrap().unsure.add(&post);
                    }
                    break;
                }
                Outcome::Unsure if !retry => {
                    ledger.lock().unwrap().unsure.add(&post);
                    break;
                }
                Outcome::Unsure => uncertain = true,
                Outcome::Refused => {}
            }
            ledger.lock().unwrap().retries += 1;
        }
    }
    Ok(())
}

/// Sends `post` once and books the answer (not the event: the caller does that once).
async fn attempt(
    addr: &str,
    client: &mut Option<Client>,
    post: &Post,
    ledger: &Mutex<Ledger>,
) -> Result<Outcome> {
    if client.is_none() {
        *client = Client::connect(addr).await.ok();
        if client.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(Outcome::Refused);
        }
    }
    let c = client.as_mut().expect("connected");
    let started = Instant::now();
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, c.request("POST", &post.target(), &[])).await;
    let took = started.elapsed();
    let outcome = {
        let mut l = ledger.lock().unwrap();
        match answer {
            Ok(Ok(r)) => {
                l.slowest = l.slowest.max(took);
                match r.status {
                    204 => {
                        l.acknowledged += 1;
                        Outcome::Acknowledged
                    }
                    503 => {
                        if r.header("retry-after").is_none() {
                            l.missing_retry_after += 1;
                        }
                        if r.header("connection") == Some("close") {
                            *client = None;
                        }
                        if r.body.contains("the event was not stored")
                            || r.body.starts_with("too many connections")
                        {
                            l.refused += 1;
                            Outcome::Refused
                        } else {
                            l.unacknowledged += 1;
                            Outcome::Unsure
                        }
                    }
                    s => bail!("unexpected status {s} for {}: {}", post.target(), r.body),
                }
            }
            _ => {
                l.cut_off += 1;
                *client = None;
                return Ok(Outcome::Unsure);
            }
        }
    };
    if !matches!(outcome, Outcome::Acknowledged) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(outcome)
}

/// GETs the watched hours in a loop; fails when a number goes down. A `503` (both stores
/// down, or PostgreSQL down and the hour not in Redis) is an answer, not a number.
async fn read_monotonic(addr: String, hours: Vec<i64>, stop: Arc<AtomicBool>) -> Result<()> {
    let mut seen: BTreeMap<i64, [u64; 3]> = BTreeMap::new();
    let mut client = Client::connect(&addr).await?;
    while !stop.load(Ordering::Relaxed) {
        for &h in &hours {
            let r = client
                .request("GET", &format!("/analytics?timestamp={}", h + 1234), &[])
                .await?;
            if r.status == 503 {
                continue;
            }
            ensure!(r.status == 200, "GET answered {} {}", r.status, r.body);
            let got = parse_body(&r.body);
            if let Some(prev) = seen.get(&h) {
                ensure!(
                    (0..3).all(|k| got[k] >= prev[k]),
                    "hour {h} went down: {prev:?} -> {got:?}"
                );
            }
            seen.insert(h, got);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until every hour posted to (and every watched hour) reads within the ledger's
/// range; on failure, prints where events went missing (see [`crate::forensics`]).
pub async fn verify(
    stack: &Stack,
    query: &str,
    ledger: &Ledger,
    watched: &[i64],
    within: Duration,
    what: &str,
) -> Result<()> {
    let mut upper = ledger.sure.clone();
    upper.merge(&ledger.unsure);
    let mut hours = ledger.hours();
    hours.extend(watched.iter().copied());
    let hours: Vec<i64> = hours.into_iter().collect();
    let result = wait_until(query, &hours, within, what, |h, got| {
        let (lo, hi) = (ledger.sure.totals(h), upper.totals(h));
        if (0..3).all(|k| lo[k] <= got[k] && got[k] <= hi[k]) {
            Ok(())
        } else {
            Err(format!("got {got:?}, acknowledged {lo:?}, at most {hi:?}"))
        }
    })
    .await;
    if result.is_err() {
        let report =
            tokio::task::block_in_place(|| crate::forensics::explain(stack, &ledger.sure, &hours));
        eprintln!("{report}");
    }
    result
}

/// After [`verify`]: `GET /analytics/total` over the whole run, each UTC day and each hour
/// within the ledger's range too: at least the distinct users (and clicks, impressions) of
/// the acknowledged events, at most those of every event whose fate is unknown as well. With
/// no uncertain event (the usual case) that is the exact truth.
pub async fn verify_totals(
    query: &str,
    ledger: &Ledger,
    within: Duration,
    what: &str,
) -> Result<()> {
    let mut upper = ledger.sure.clone();
    upper.merge(&ledger.unsure);
    let hours: Vec<i64> = ledger.hours().into_iter().collect();
    wait_totals(
        query,
        &total_spans(&hours),
        within,
        what,
        |(from, to), got| {
            let (lo, hi) = (ledger.sure.span(from, to), upper.span(from, to));
            if (0..3).all(|k| lo[k] <= got[k] && got[k] <= hi[k]) {
                Ok(())
            } else {
                Err(format!("got {got:?}, acknowledged {lo:?}, at most {hi:?}"))
            }
        },
    )
    .await
}
