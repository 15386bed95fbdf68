//! `GET /analytics?from=&to=` on the real stack: events over 34 hours (late ones included,
//! with a 48 h lateness window), Redis flushed and then refilled for half of them only, so
//! that a range is answered partly from Redis and partly from PostgreSQL; every row equals
//! the single-hour answer and the ground truth, in CSV and in JSON, and hours without data
//! are rows of zeros.

use anyhow::{ensure, Context, Result};
use e2e::http::Client;
use e2e::workload::{dataset, post_recorded, wait_exact, Rng, Truth, HOUR};
use e2e::{Flags, Pipeline, PipelineOptions, Stack, PROCESSOR_ARGS};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_equals_its_single_hours_and_the_truth() -> Result<()> {
    let stack = Stack::start()?;
    let window = ["--max-event-age", "48h"];
    // No in-process cache: every read below goes to the stores, so the tiers that served it
    // can be counted.
    let no_cache = ["--cache-current-hour", "0s", "--cache-other-hours", "0s"];
    let pipeline = Pipeline::start(
        &stack,
        PipelineOptions {
            command: Flags::args(&window),
            processor: Flags::args(&[PROCESSOR_ARGS, &window].concat()),
            query: Flags::args(&no_cache),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let Pipeline { command, query, .. } = &pipeline;

    let now = analytics_model::clock::now_ms();
    let h0 = now.div_euclid(HOUR) * HOUR;
    let back: Vec<i64> = (0..34).collect();
    let mut rng = Rng::seeded(now as u64);
    let posts = dataset(&mut rng, 3_000, &back, now);
    let mut truth = Truth::default();
    post_recorded(&command.addr(), &posts, 8, &mut truth).await?;
    let hours: Vec<i64> = back.iter().map(|b| h0 - b * HOUR).collect();
    let q = query.addr();
    wait_exact(&q, &truth, &hours, Duration::from_secs(90), "every hour").await?;

    // Redis loses everything; single-hour reads bring back every other hour (a backfill),
    // so the range below is answered from both stores.
    stack.flush_redis()?;
    let mut client = Client::connect(&q).await?;
    let has_data = |h: &i64| truth.totals(*h) != [0, 0, 0];
    let backfilled: Vec<i64> = hours.iter().step_by(2).copied().filter(has_data).collect();
    let with_data = hours.iter().filter(|h| has_data(h)).count() as f64;
    // The backfill is written after the answer: read those hours until Redis serves them all.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let before = served(&q, "redis").await?;
        for h in &backfilled {
            let r = client
                .request("GET", &format!("/analytics?timestamp={h}"), &[])
                .await?;
            ensure!(r.status == 200);
        }
        if served(&q, "redis").await? - before == backfilled.len() as f64 {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the backfilled hours never came from Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // From the middle of the oldest hour to the middle of the hour after the current one:
    // 33 hours back, the current hour and the next (empty) hour.
    let from = h0 - 33 * HOUR + HOUR / 2;
    let to = h0 + HOUR + HOUR / 2;
    let target = format!("/analytics?from={from}&to={to}");
    let tiers = ["redis", "postgres", "empty"];
    let mut before = Vec::new();
    for t in tiers {
        before.push(served(&q, t).await?);
    }
    let csv = client.request("GET", &target, &[]).await?;
    ensure!(csv.status == 200, "{} {}", csv.status, csv.body);
    let mut by_tier = Vec::new();
    for (t, b) in tiers.iter().zip(&before) {
        by_tier.push(served(&q, t).await? - b);
    }
    // The hours with data from both stores (the backfilled half at least from Redis, the
    // rest from PostgreSQL unless the materializer rewrote one meanwhile); the others empty.
    ensure!(
        by_tier[0] >= backfilled.len() as f64
            && by_tier[1] >= 1.0
            && by_tier[0] + by_tier[1] == with_data
            && by_tier[2] == 35.0 - with_data,
        "the range's hours by tier (redis, postgres, empty): {by_tier:?}"
    );
    ensure!(csv.header("content-type") == Some("text/csv; charset=utf-8"));
    let json = client
        .request("GET", &target, &[("Accept", "application/json")])
        .await?;
    ensure!(json.status == 200 && json.header("content-type") == Some("application/json"));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.body)?;
    let mut lines = csv.body.lines();
    ensure!(lines.next() == Some("hour,unique_users,clicks,impressions"));
    let csv_rows: Vec<&str> = lines.collect();
    ensure!(
        csv_rows.len() == 35 && rows.len() == 35,
        "{} rows",
        csv_rows.len()
    );
    for (i, (line, obj)) in csv_rows.iter().zip(&rows).enumerate() {
        let hour = h0 - 33 * HOUR + i as i64 * HOUR;
        let want = truth.totals(hour);
        let single = client
            .request("GET", &format!("/analytics?timestamp={hour}"), &[])
            .await?;
        let single = loadgen::truth::parse_body(&single.body);
        let stamp = analytics_model::hour::format_rfc3339(hour);
        let expected_line = format!("{stamp},{},{},{}", want[0], want[1], want[2]);
        ensure!(
            *line == expected_line,
            "row {i}: {line} (truth {expected_line})"
        );
        ensure!(
            single == want,
            "single hour {stamp}: {single:?} vs truth {want:?}"
        );
        let got = [
            obj["unique_users"].as_u64().context("unique_users")?,
            obj["clicks"].as_u64().context("clicks")?,
            obj["impressions"].as_u64().context("impressions")?,
        ];
        ensure!(
            obj["hour"] == stamp.as_str() && got == want,
            "JSON row {i}: {obj}"
        );
    }
    ensure!(
        csv_rows.last()
            == Some(
                &format!("{},0,0,0", analytics_model::hour::format_rfc3339(h0 + HOUR)).as_str()
            ),
        "the empty next hour is a row of zeros"
    );

    // Refusals: one line each.
    for (q_, words) in [
        (
            format!("/analytics?from={from}"),
            "missing query parameter 'to'",
        ),
        (format!("/analytics?from={to}&to={from}"), "after"),
        (
            format!("/analytics?timestamp={from}&from={from}&to={to}"),
            "cannot be combined",
        ),
        (
            format!("/analytics?from=0&to={}", 745 * HOUR),
            "at most 744",
        ),
    ] {
        let r = client.request("GET", &q_, &[]).await?;
        ensure!(
            r.status == 400 && r.body.contains(words),
            "{q_}: {} {}",
            r.status,
            r.body
        );
        ensure!(r.body.trim_end().lines().count() == 1);
    }
    let r = client
        .request("GET", &format!("/analytics?from=0&to={}", 744 * HOUR), &[])
        .await?;
    ensure!(
        r.status == 200 && r.body.lines().count() == 745,
        "{}",
        r.status
    );
    Ok(())
}

/// `query_served_total` of one tier.
async fn served(query: &str, tier: &str) -> Result<f64> {
    e2e::scrape::metric(
        query,
        &format!("analytics_query_served_total{{tier=\"{tier}\"}}"),
    )
    .await
}
