//! A load run: `concurrency` closed-loop clients (optionally paced to a total rate) sending a
//! mix of POSTs to the command service and GETs to the query service, recording latency in
//! HDR histograms and, for every POST answered 204, the ground truth; then optionally the
//! verification of every touched hour and a freshness probe.

use crate::client::Client;
use crate::report::{Latency, Report, Verification};
use crate::traffic::{Shape, Traffic};
use crate::truth::{Post, Truth, HOUR};
use crate::verify::get_hour;
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `host:port` of the command service (POSTs).
    pub command: String,
    /// `host:port` of the query service (GETs).
    pub query: String,
    pub concurrency: usize,
    /// Total requests per second over all clients (`None`: as fast as answers come).
    pub rate: Option<f64>,
    /// Share of GETs; the rest are POSTs.
    pub get_share: f64,
    pub duration: Duration,
    /// Stop after this many requests (before `duration` if reached first).
    pub requests: Option<u64>,
    pub seed: u64,
    pub shape: Shape,
    pub verify: bool,
    /// How long verification waits for the pipeline to catch up.
    pub verify_timeout: Duration,
    pub freshness_probes: u32,
    pub progress: bool,
}

/// Microsecond histogram from 1 µs to 60 s, three significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
}

/// What one client saw.
struct ClientResult {
    get: Histogram<u64>,
    post: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    truth: Truth,
}

pub async fn run(cfg: RunConfig) -> Result<Report> {
    if cfg.freshness_probes > 0 && cfg.shape.current_hour_share > 0.0 && cfg.get_share < 1.0 {
        bail!(
            "the freshness probe needs the current hour to itself: use --current-hour-share 0 \
             (the load then writes earlier hours only)"
        );
    }
    let before = if cfg.verify {
        Some(snapshot(&cfg.query, &hours_in_reach(&cfg.shape)).await?)
    } else {
        None
    };
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..cfg.concurrency {
        let cfg = cfg.clone();
        let counters = counters.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            client(id, cfg, counters, stop, started).await
        }));
    }
    let progress = cfg.progress.then(|| {
        let counters = counters.clone();
        let stop = stop.clone();
        tokio::spawn(async move { show_progress(counters, stop, started).await })
    });
    let probe = if cfg.freshness_probes > 0 {
        let (command, query, n) = (cfg.command.clone(), cfg.query.clone(), cfg.freshness_probes);
        let prefix = format!("{}probe-", cfg.shape.user_prefix);
        Some(tokio::spawn(async move {
            freshness(&command, &query, n, &prefix).await
        }))
    } else {
        None
    };
    let deadline = started + cfg.duration;
    while Instant::now() < deadline
        && cfg
            .requests
            .is_none_or(|n| counters.done.load(Ordering::Relaxed) < n)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut get = histogram();
    let mut post = histogram();
    let mut statuses = BTreeMap::new();
    let mut truth = Truth::default();
    for t in tasks {
        let r = t.await??;
        get.add(&r.get)?;
        post.add(&r.post)?;
        for (k, v) in r.statuses {
            *statuses.entry(k).or_insert(0) += v;
        }
        truth.merge(&r.truth);
    }
    let elapsed = started.elapsed();
    if let Some(p) = progress {
        let _ = p.await;
    }
    let freshness = match probe {
        Some(p) => Some(p.await??),
        None => None,
    };
    let verification = match before {
        Some(before) => Some(verify(&cfg, &truth, &before).await?),
        None => None,
    };
    Ok(Report {
        seed: cfg.seed,
        concurrency: cfg.concurrency,
        seconds: elapsed.as_secs_f64(),
        requests: counters.done.load(Ordering::Relaxed),
        transport_errors: counters.errors.load(Ordering::Relaxed),
        throughput: counters.done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        get: Latency::of(&get, elapsed),
        post: Latency::of(&post, elapsed),
        statuses,
        freshness: freshness.and_then(|h| Latency::of(&h, elapsed)),
        verification,
    })
}

async fn client(
    id: usize,
    cfg: RunConfig,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Result<ClientResult> {
    let mut traffic = Traffic::new(cfg.shape.clone(), cfg.seed ^ ((id as u64 + 1) * 0x9E37));
    let mut result = ClientResult {
        get: histogram(),
        post: histogram(),
        statuses: BTreeMap::new(),
        truth: Truth::default(),
    };
    let mut command: Option<Client> = None;
    let mut query: Option<Client> = None;
    // Pacing: this client's share of the rate, measured from the intended send time so that
    // a slow answer is not hidden (no coordinated omission).
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(cfg.concurrency as f64 / r.max(0.001)));
    let mut k: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(n) = cfg.requests {
            if counters.sent.fetch_add(1, Ordering::Relaxed) >= n {
                break;
            }
        }
        let intended = match interval {
            Some(i) => {
                let at = started + i.mul_f64(k as f64 + id as f64 / cfg.concurrency as f64);
                k += 1;
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let now_ms = analytics_model::clock::now_ms();
        let is_get = traffic.unit() < cfg.get_share;
        let (conn, addr, method, target, post) = if is_get {
            (
                &mut query,
                &cfg.query,
                "GET",
                traffic.get_target(now_ms),
                None,
            )
        } else {
            let p = traffic.post(now_ms);
            (&mut command, &cfg.command, "POST", p.target(), Some(p))
        };
        let outcome = request(conn, addr, method, &target).await;
        let micros = intended.elapsed().as_micros().max(1) as u64;
        counters.done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(status) => {
                let h = if is_get {
                    &mut result.get
                } else {
                    &mut result.post
                };
                h.saturating_record(micros);
                *result
                    .statuses
                    .entry(format!("{method} {status}"))
                    .or_insert(0) += 1;
                if let (Some(p), 204) = (post.as_ref(), status) {
                    result.truth.add(p);
                }
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                *conn = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(result)
}

/// One request on a kept-alive connection, reconnecting when needed; the status code.
async fn request(conn: &mut Option<Client>, addr: &str, method: &str, target: &str) -> Result<u16> {
    if conn.is_none() {
        *conn = Some(Client::connect(addr).await?);
    }
    let c = conn.as_mut().expect("connected");
    Ok(c.request(method, target, &[]).await?.status)
}

async fn show_progress(counters: Arc<Counters>, stop: Arc<AtomicBool>, started: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut last = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done = counters.done.load(Ordering::Relaxed);
        let line = format!(
            "[{:>5.1}s] {done} requests, {} req/s, {} transport errors",
            started.elapsed().as_secs_f64(),
            done - last,
            counters.errors.load(Ordering::Relaxed)
        );
        last = done;
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
}

/// Every hour the traffic can touch, from `hours_back` hours ago to the next hour.
fn hours_in_reach(shape: &Shape) -> Vec<i64> {
    let h0 = analytics_model::clock::now_ms().div_euclid(HOUR) * HOUR;
    (-1..=shape.hours_back).map(|b| h0 - b * HOUR).collect()
}

async fn snapshot(query: &str, hours: &[i64]) -> Result<BTreeMap<i64, [u64; 3]>> {
    let mut c = Client::connect(query)
        .await
        .context("verification needs the query service")?;
    let mut out = BTreeMap::new();
    for &h in hours {
        out.insert(h, get_hour(&mut c, h).await?);
    }
    Ok(out)
}

/// Waits until every touched hour equals what it held before plus the acknowledged writes
/// (this run's users are its own, so unique users add up), or reports the differences.
async fn verify(
    cfg: &RunConfig,
    truth: &Truth,
    before: &BTreeMap<i64, [u64; 3]>,
) -> Result<Verification> {
    let want: BTreeMap<i64, [u64; 3]> = truth
        .hours
        .keys()
        .map(|&h| {
            let b = before.get(&h).copied().unwrap_or_default();
            let t = truth.totals(h);
            (h, [b[0] + t[0], b[1] + t[1], b[2] + t[2]])
        })
        .collect();
    let started = Instant::now();
    let hours: Vec<i64> = want.keys().copied().collect();
    let mismatches = crate::verify::until(&cfg.query, &hours, cfg.verify_timeout, |h, got| {
        let w = want[&h];
        if got == w {
            Ok(())
        } else {
            Err(format!("got {got:?}, want {w:?}"))
        }
    })
    .await;
    Ok(Verification {
        hours: want.len(),
        acknowledged: truth.hours.values().map(|(_, c, i)| c + i).sum(),
        exact: mismatches.is_empty(),
        waited_seconds: started.elapsed().as_secs_f64(),
        mismatches,
    })
}

/// Posts `n` clicks for fresh users in the current hour, one at a time, and measures the time
/// from each 204 until a GET counts it.
async fn freshness(command: &str, query: &str, n: u32, prefix: &str) -> Result<Histogram<u64>> {
    let mut h = histogram();
    let mut post = Client::connect(command).await?;
    let mut get = Client::connect(query).await?;
    for i in 0..n {
        let now = analytics_model::clock::now_ms();
        let hour = now.div_euclid(HOUR) * HOUR;
        let before = get_hour(&mut get, hour).await?;
        let p = Post {
            ts: now,
            user: format!("{prefix}{i}"),
            click: true,
            id: None,
        };
        let r = post.request("POST", &p.target(), &[]).await?;
        if r.status != 204 {
            continue;
        }
        let acked = Instant::now();
        loop {
            let got = get_hour(&mut get, hour).await?;
            if got[1] > before[1] {
                h.saturating_record(acked.elapsed().as_micros().max(1) as u64);
                break;
            }
            if acked.elapsed() > Duration::from_secs(30) {
                bail!("probe {i} not visible after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(h)
}
