//! Exact unique users over ranges on the real stack (`GET /analytics/total`, and
//! `interval=day|week|hour` with `tz` on `GET /analytics?from&to`): events over 40 hours
//! from 640 users, so that most users come back in many hours, then checked against the
//! ground truth: the whole range, each UTC day, each Paris day, the ISO week, single hours
//! (each equal to the hour's own answer), CSV and JSON.
//!
//! Two materializers in different consumer groups both read the whole changelog into the
//! same membership tables, and one is killed (SIGKILL) and restarted mid-way: if a record
//! were applied twice, a user would get a second number and ranges would count it twice.
//! Last, a materializer with a retention of an hour deletes the older hours' sets only.

use anyhow::{ensure, Result};
use e2e::http::Client;
use e2e::workload::{dataset, post_recorded, wait_exact, Rng, Truth, HOUR};
use e2e::{Flags, Pipeline, PipelineOptions, Stack, MATERIALIZER_ARGS, PROCESSOR_ARGS};
use std::time::{Duration, Instant};

const DAY: i64 = 24 * HOUR;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_and_calendar_rows_equal_the_truth() -> Result<()> {
    let stack = Stack::start()?;
    let window = ["--max-event-age", "48h"];
    let processor = [PROCESSOR_ARGS, &window, &["--checkpoint-interval", "1s"]].concat();
    let pipeline = Pipeline::start(
        &stack,
        PipelineOptions {
            command: Flags::args(&window),
            processor: Flags::args(&processor),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let second = ["--group-id", "another-materializer"];
    let mut other = stack.service_with(
        "materializer",
        Flags::args(&[MATERIALIZER_ARGS, &second].concat()),
    )?;
    other.wait_ready(Duration::from_secs(30)).await?;
    let (command, q) = (pipeline.command.addr(), pipeline.query.addr());

    let now = analytics_model::clock::now_ms();
    let h0 = now.div_euclid(HOUR) * HOUR;
    let back: Vec<i64> = (0..40).collect();
    let mut rng = Rng::seeded(now as u64);
    let posts = dataset(&mut rng, 4_000, &back, now);
    let mut truth = Truth::default();
    let (first, rest) = posts.split_at(2_000);
    post_recorded(&command, first, 8, &mut truth).await?;
    other.proc.kill9();
    post_recorded(&command, rest, 8, &mut truth).await?;
    let other = stack.service_with(
        "materializer",
        Flags::args(&[MATERIALIZER_ARGS, &second].concat()),
    )?;
    other.wait_ready(Duration::from_secs(30)).await?;
    let hours: Vec<i64> = back.iter().map(|b| h0 - b * HOUR).collect();
    wait_exact(&q, &truth, &hours, Duration::from_secs(90), "every hour").await?;

    let from = h0 - 39 * HOUR;
    let to = h0 + HOUR;
    let mut client = Client::connect(&q).await?;
    // Membership follows the changelog's checkpoints: wait for the whole range.
    let whole = truth.span(from, to);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = total(&mut client, from + HOUR / 2, to - 1).await?;
        if got == whole {
            break;
        }
        ensure!(Instant::now() < deadline, "total {got:?}, truth {whole:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        whole[0]
            < (from..to)
                .step_by(HOUR as usize)
                .map(|h| truth.totals(h)[0])
                .sum::<u64>(),
        "the data set must have users in several hours"
    );

    // Each UTC day, and each single hour (equal to the hour's own answer).
    let mut day = from.div_euclid(DAY) * DAY;
    while day < to {
        let got = total(&mut client, day, day + DAY).await?;
        ensure!(got == truth.span(day, day + DAY), "UTC day {day}: {got:?}");
        day += DAY;
    }
    for h in hours.iter().step_by(5) {
        let got = total(&mut client, *h, *h + 1).await?;
        ensure!(
            got == truth.totals(*h),
            "hour {h}: total {got:?} vs {:?}",
            truth.totals(*h)
        );
    }

    // JSON echoes the bounds in the zone asked for.
    let r = client
        .request(
            "GET",
            &format!("/analytics/total?from={from}&to={to}&tz=Europe/Paris"),
            &[("Accept", "application/json")],
        )
        .await?;
    ensure!(r.status == 200 && r.header("content-type") == Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body)?;
    let zone = query::calendar::Zone::parse("Europe/Paris")?;
    ensure!(
        v["from"] == zone.rfc3339(analytics_model::hour::Millis(from)).as_str()
            && v["to"] == zone.rfc3339(analytics_model::hour::Millis(to)).as_str()
            && v["unique_users"] == whole[0]
            && v["clicks"] == whole[1]
            && v["impressions"] == whole[2],
        "{v}"
    );

    // One row per Paris day, and per ISO week, each exact.
    for (interval, tz) in [
        ("day", "Europe/Paris"),
        ("week", "UTC"),
        ("day", "America/New_York"),
    ] {
        let zone = query::calendar::Zone::parse(tz)?;
        let interval_ = query::calendar::Interval::parse(interval)?;
        let buckets = query::calendar::buckets(
            &zone,
            interval_,
            analytics_model::hour::Millis(from),
            analytics_model::hour::Millis(to),
        )?;
        let target = format!("/analytics?from={from}&to={to}&interval={interval}&tz={tz}");
        let csv = client.request("GET", &target, &[]).await?;
        ensure!(
            csv.status == 200 && csv.header("content-type") == Some("text/csv; charset=utf-8"),
            "{} {}",
            csv.status,
            csv.body
        );
        let json = client
            .request("GET", &target, &[("Accept", "application/json")])
            .await?;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json.body)?;
        let mut lines = csv.body.lines();
        ensure!(lines.next() == Some("hour,unique_users,clicks,impressions"));
        let lines: Vec<&str> = lines.collect();
        ensure!(
            lines.len() == buckets.len() && rows.len() == buckets.len(),
            "{target}: {}",
            csv.body
        );
        for ((b, line), obj) in buckets.iter().zip(&lines).zip(&rows) {
            let want = truth.span(b.start.ms(), b.end.ms());
            let start = zone.rfc3339(b.start.start());
            ensure!(
                *line == format!("{start},{},{},{}", want[0], want[1], want[2]),
                "{target}: {line} vs truth {want:?}"
            );
            ensure!(
                obj["hour"] == start.as_str()
                    && obj["interval"] == interval
                    && obj["unique_users"] == want[0],
                "{obj}"
            );
        }
    }

    // Hourly rows in a zone: the hours' own answers, labelled in the zone.
    let target = format!(
        "/analytics?from={}&to={to}&interval=hour&tz=Europe/Paris",
        to - 3 * HOUR
    );
    let csv = client.request("GET", &target, &[]).await?;
    let lines: Vec<&str> = csv.body.lines().skip(1).collect();
    ensure!(lines.len() == 3, "{}", csv.body);
    for (i, line) in lines.iter().enumerate() {
        let h = to - (3 - i as i64) * HOUR;
        let want = truth.totals(h);
        let start = zone.rfc3339(analytics_model::hour::Millis(h));
        ensure!(
            *line == format!("{start},{},{},{}", want[0], want[1], want[2]),
            "{line}"
        );
    }

    // One-line refusals.
    for (target, words) in [
        (
            format!("/analytics/total?from={from}"),
            "missing query parameter 'to'",
        ),
        (
            format!("/analytics/total?from={from}&to={}", from + 401 * DAY),
            "(--max-total-days)",
        ),
        (
            format!(
                "/analytics/total?from={}&to={}",
                now - 500 * DAY,
                now - 499 * DAY
            ),
            "(--membership-retention)",
        ),
        (
            format!("/analytics?from={from}&to={to}&interval=fortnight"),
            "unknown interval 'fortnight'",
        ),
        (
            format!("/analytics?from={from}&to={to}&interval=day&tz=Asia/Kathmandu"),
            "Asia/Kathmandu is at offset +05:45",
        ),
        (
            format!("/analytics?from={from}&to={to}&interval=day&tz=Europe/Atlantis"),
            "unknown time zone",
        ),
        (
            format!("/analytics?from={from}&to={to}&interval=day&interval=week"),
            "'interval' given more than once",
        ),
    ] {
        let r = client.request("GET", &target, &[]).await?;
        ensure!(
            r.status == 400 && r.body.contains(words),
            "{target}: {} {}",
            r.status,
            r.body
        );
        ensure!(r.body.trim_end().lines().count() == 1, "{}", r.body);
    }
    drop(other);

    // The materializer deletes membership past --membership-retention (plus a day), at its
    // start and every ten minutes: with 1 h, the hours more than 25 h old go, the others stay.
    let count = |sql: &str| -> Result<i64> { Ok(stack.psql(sql)?.trim().parse()?) };
    // (An hour may begin meanwhile: the hour at the horizon is in neither count.)
    let horizon = (analytics_model::clock::now_ms() - HOUR - DAY).div_euclid(HOUR) * HOUR;
    let old = format!("SELECT count(*) FROM membership_hours WHERE hour_ms < {horizon}");
    let kept = format!("SELECT count(*) FROM membership_hours WHERE hour_ms > {horizon}");
    ensure!(
        count(&old)? > 0,
        "the data set must reach back past the horizon"
    );
    let (old_before, kept_before) = (count(&old)?, count(&kept)?);
    let short = stack.service_with(
        "materializer",
        Flags::args(
            &[
                MATERIALIZER_ARGS,
                &second,
                &["--membership-retention", "1h"],
            ]
            .concat(),
        ),
    )?;
    short.wait_ready(Duration::from_secs(30)).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&old)? > 0 {
        ensure!(
            Instant::now() < deadline,
            "{} old hour sets left",
            count(&old)?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept_after = count(&kept)?;
    ensure!(
        kept_after == kept_before,
        "recent hour sets deleted too: {kept_before} -> {kept_after} ({old_before} old ones deleted)"
    );
    Ok(())
}

/// `/analytics/total` as [unique users, clicks, impressions].
async fn total(client: &mut Client, from: i64, to: i64) -> Result<[u64; 3]> {
    let r = client
        .request("GET", &format!("/analytics/total?from={from}&to={to}"), &[])
        .await?;
    ensure!(r.status == 200, "{} {}", r.status, r.body);
    Ok(loadgen::truth::parse_body(&r.body))
}
