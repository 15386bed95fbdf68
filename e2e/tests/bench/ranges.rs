//! Section 10: exact unique users over ranges. On a stack of its own, `BENCH_RANGE_DAYS`
//! (28) days of history go through the real pipeline: each hour `BENCH_RANGE_USERS` (20 000)
//! draws from a population of 1 000 000 users, one event each, produced to the events topic
//! as the command would, read by a processor with a lateness window of the days plus two
//! and by the materializer's membership. The same (hour, user) pairs are loaded into a
//! PostgreSQL table with an index on the hour. Then `GET /analytics/total` over the last 1, 7
//! and 28 days, timed, against PostgreSQL's own `SELECT count(DISTINCT user_id)` over the same
//! hours (both answers checked against the truth), and the bytes PostgreSQL holds for
//! membership per (hour, user) pair.

use anyhow::{ensure, Context, Result};
use e2e::workload::{parse_body, HOUR};
use e2e::{Flags, Pipeline, PipelineOptions, Stack};
use loadgen::truth::Post;
use std::time::{Duration, Instant};

const POPULATION: u64 = 1_000_000;

/// The user of draw `k` of hour `i`: two rounds of multiply and xor-shift over 32 bits (so
/// that draws look independent), written the same way in SQL ([`PAIRS_SQL`]; no product
/// exceeds 2^63).
fn user(i: u64, k: u64, per_hour: u64) -> u64 {
    const M32: u64 = 1 << 32;
    let x = ((i * per_hour + k) * 2_654_435_761) % M32;
    let x = ((x ^ (x >> 16)) * 73_244_475) % M32;
    (x ^ (x >> 16)) % POPULATION
}

const PAIRS_SQL: &str = "CREATE UNLOGGED TABLE bench_pairs AS \
    SELECT $1::bigint + i * 3600000 AS hour_ms, 'u' || ((x # (x >> 16)) % 1000000) AS user_id \
    FROM generate_series(0::bigint, $3::bigint - 1) i, generate_series(0::bigint, $2::bigint - 1) k, \
    LATERAL (SELECT ((i * $2::bigint + k) * 2654435761) % 4294967296 AS x1) a, \
    LATERAL (SELECT ((x1 # (x1 >> 16)) * 73244475) % 4294967296 AS x) b";

/// One span of section 10.
pub struct Row {
    pub days: i64,
    pub users: u64,
    /// `/analytics/total`, ms.
    pub total: Vec<f64>,
    /// PostgreSQL's `count(DISTINCT)`, ms.
    pub baseline: Vec<f64>,
}

pub struct Ranges {
    pub events: u64,
    /// Distinct (hour, user) pairs.
    pub pairs: u64,
    /// From the first event produced to the whole range's total exact.
    pub load_seconds: f64,
    pub rows: Vec<Row>,
    /// Bytes of the membership tables and their indexes: users, hours, days.
    pub bytes: [i64; 3],
    /// Day rows of the whole history in `Europe/Paris` (each a union of hour sets: a Paris
    /// day is not a UTC day), ms of each request.
    pub paris_days: Vec<f64>,
}

pub async fn measure(days: i64, per_hour: u64) -> Result<Ranges> {
    let hours = days * 24;
    eprintln!("10. ranges: {days} days × {per_hour} users an hour from {POPULATION}");
    let stack = Stack::start()?;
    let window = format!("{}d", days + 2);
    let processor = ["--max-event-age", &window];
    let pipeline = Pipeline::spawn(
        &stack,
        PipelineOptions {
            processor: Flags::args(&processor),
            ..PipelineOptions::default()
        },
    )?;
    for s in pipeline.services() {
        s.wait_ready(Duration::from_secs(120)).await?;
    }
    let end = analytics_model::clock::now_ms().div_euclid(HOUR) * HOUR;
    let first = end - hours * HOUR;
    let started = Instant::now();
    let posts = (0..hours as u64).flat_map(|i| {
        (0..per_hour).map(move |k| Post {
            ts: first + i as i64 * HOUR + (k as i64 * 179_999) % HOUR,
            user: format!("u{}", user(i, k, per_hour)),
            click: k % 10 == 0,
            id: None,
        })
    });
    let events = hours as u64 * per_hour;
    loadgen::kafka::produce_posts(
        &stack.kafka_brokers(),
        "analytics.events",
        posts,
        20_000,
        50,
    )
    .await?;
    eprintln!(
        "  {events} events produced in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let (pairs, truths) = truth(hours, per_hour, &[1, 7, days]);
    let q = pipeline.query.addr();
    let mut client = e2e::http::Client::connect(&q).await?;
    // (A connection idle through a slow baseline is closed by the server: one per span.)
    let whole = format!("/analytics/total?from={first}&to={end}");
    loop {
        let r = client.request("GET", &whole, &[]).await?;
        if r.status == 200 && parse_body(&r.body)[0] == truths[2] {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the total never became exact: {} (truth {})",
            r.body,
            truths[2]
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    eprintln!("  the {days}-day total exact after {load_seconds:.0} s");
    let pg = connect(&stack).await?;
    pg.execute(PAIRS_SQL, &[&first, &(per_hour as i64), &hours])
        .await?;
    pg.batch_execute("CREATE INDEX ON bench_pairs (hour_ms); ANALYZE bench_pairs")
        .await?;
    let mut rows = Vec::new();
    for (span, want) in [1, 7, days].into_iter().zip(truths) {
        let from = end - span * 24 * HOUR;
        let mut client = e2e::http::Client::connect(&q).await?;
        let total = time_total(&mut client, from, end, want, 51).await?;
        let baseline = time_baseline(&pg, from, end, want, if span > 7 { 3 } else { 5 }).await?;
        eprintln!(
            "  {span} days: {want} users; total p50 {:.1} ms, count(DISTINCT) p50 {:.0} ms",
            median(&total),
            median(&baseline)
        );
        rows.push(Row {
            days: span,
            users: want,
            total,
            baseline,
        });
    }
    let paris_days = time_rows(&q, first, end, days).await?;
    let mut bytes = [0i64; 3];
    for (b, table) in
        bytes
            .iter_mut()
            .zip(["membership_users", "membership_hours", "membership_days"])
    {
        *b = pg
            .query_one(
                "SELECT pg_total_relation_size($1::text::regclass)",
                &[&table],
            )
            .await?
            .get(0);
    }
    Ok(Ranges {
        events,
        pairs,
        load_seconds,
        rows,
        bytes,
        paris_days,
    })
}

/// Distinct (hour, user) pairs, and the distinct users of the last `spans` days.
fn truth(hours: i64, per_hour: u64, spans: &[i64]) -> (u64, Vec<u64>) {
    let mut last_hour = vec![u32::MAX; POPULATION as usize];
    let mut pairs = 0;
    for i in 0..hours as u64 {
        for k in 0..per_hour {
            let u = user(i, k, per_hour) as usize;
            if last_hour[u] != i as u32 {
                last_hour[u] = i as u32;
                pairs += 1;
            }
        }
    }
    // A user is in the last `d` days when it was last seen in one of their hours.
    let counts = spans
        .iter()
        .map(|d| {
            let since = (hours - d * 24).max(0) as u32;
            last_hour
                .iter()
                .filter(|&&h| h != u32::MAX && h >= since)
                .count() as u64
        })
        .collect();
    (pairs, counts)
}

async fn connect(stack: &Stack) -> Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&stack.postgres_url(), tokio_postgres::NoTls)
            .await
            .context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(client)
}

/// Milliseconds of `n` totals (after one not timed), each checked.
async fn time_total(
    client: &mut e2e::http::Client,
    from: i64,
    to: i64,
    want: u64,
    n: usize,
) -> Result<Vec<f64>> {
    let target = format!("/analytics/total?from={from}&to={to}");
    let mut times = Vec::new();
    for i in 0..=n {
        let at = Instant::now();
        let r = client.request("GET", &target, &[]).await?;
        let ms = at.elapsed().as_secs_f64() * 1e3;
        ensure!(
            r.status == 200 && parse_body(&r.body)[0] == want,
            "{target}: {}",
            r.body
        );
        if i > 0 {
            times.push(ms);
        }
    }
    Ok(times)
}

/// Milliseconds of 21 requests (after one not timed) for the day rows of `[from, to)` in
/// Paris time: `days` + 1 rows (the first Paris day starts the evening before).
async fn time_rows(query: &str, from: i64, to: i64, days: i64) -> Result<Vec<f64>> {
    let mut client = e2e::http::Client::connect(query).await?;
    let target = format!("/analytics?from={from}&to={to}&interval=day&tz=Europe/Paris");
    let mut times = Vec::new();
    for i in 0..=21 {
        let at = Instant::now();
        let r = client.request("GET", &target, &[]).await?;
        let ms = at.elapsed().as_secs_f64() * 1e3;
        let rows = r.body.lines().count() as i64 - 1;
        ensure!(
            r.status == 200 && (days..=days + 1).contains(&rows),
            "{target}: {} {} rows",
            r.status,
            rows
        );
        if i > 0 {
            times.push(ms);
        }
    }
    Ok(times)
}

/// Milliseconds of `n` runs of the baseline query (after one not timed), each checked.
async fn time_baseline(
    pg: &tokio_postgres::Client,
    from: i64,
    to: i64,
    want: u64,
    n: usize,
) -> Result<Vec<f64>> {
    let sql =
        "SELECT count(DISTINCT user_id) FROM bench_pairs WHERE hour_ms >= $1 AND hour_ms < $2";
    let mut times = Vec::new();
    for i in 0..=n {
        let at = Instant::now();
        let got: i64 = pg.query_one(sql, &[&from, &to]).await?.get(0);
        let ms = at.elapsed().as_secs_f64() * 1e3;
        ensure!(got as u64 == want, "count(DISTINCT): {got}, truth {want}");
        if i > 0 {
            times.push(ms);
        }
    }
    Ok(times)
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// Nearest rank: with fewer than 100 samples, p99 is the slowest.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
