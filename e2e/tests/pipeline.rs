//! The whole pipeline on a real broker, Redis and PostgreSQL, with the four services as
//! processes: exact counts for a deterministic data set with late events, then after a Redis
//! flush (served from PostgreSQL), after a processor SIGKILL and restart, and while Redis is
//! flushed under load (no hour ever reads lower than before).

use anyhow::{ensure, Result};
use e2e::forensics::Answers;
use e2e::http::Client;
use e2e::workload::{dataset, get_hour, post_all, post_recorded, Rng, Truth, HOUR};
use e2e::{Pipeline, PipelineOptions, Service, Stack, PROCESSOR_ARGS};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_is_exact_through_redis_loss_and_processor_crash() -> Result<()> {
    let mut stack = Stack::start()?;
    let Pipeline {
        command,
        mut processor,
        materializer,
        query,
        ..
    } = Pipeline::start(&stack, PipelineOptions::default()).await?;

    let now = analytics_model::clock::now_ms();
    let h0 = now.div_euclid(HOUR) * HOUR;
    let hours: Vec<i64> = (0..=6).map(|b| h0 - b * HOUR).collect(); // hour h0-4h and h0-6h stay empty
    let answers = Answers {
        query: &query,
        hours: &hours,
    };
    let mut rng = Rng::seeded(20_231_114);
    let mut truth = Truth::default();

    // 1. On-time traffic for the current and recent hours, then late events for hours two
    //    and five hours back, from several concurrent clients.
    let on_time = dataset(&mut rng, 16_000, &[0, 0, 0, 1, 3], now);
    let late = dataset(&mut rng, 4_000, &[2, 5], now);
    post_all(&command.addr(), &on_time, 8).await?;
    post_all(&command.addr(), &late, 8).await?;
    on_time.iter().chain(&late).for_each(|p| truth.add(p));
    ensure!(truth.hours.len() == 5, "data set covers 5 hours");

    // Bad requests change nothing.
    let mut c = Client::connect(&command.addr()).await?;
    for bad in [
        format!("/analytics?timestamp={now}&user=&click"),
        format!("/analytics?timestamp={now}&user=x&click&impression"),
        format!("/analytics?timestamp={}&user=x&click", now / 1000),
        "/analytics?timestamp=-1&user=x&click".to_owned(),
    ] {
        let r = c.request("POST", &bad, &[]).await?;
        ensure!(r.status == 400, "{bad} answered {}", r.status);
    }

    answers.exact(&stack, &truth, LONG, "after ingest").await?;

    // 2. Redis loses everything: the same answers come back via PostgreSQL.
    let from_pg = Counted(r#"analytics_query_served_total{tier="postgres"}"#);
    let before = from_pg.now(&query).await?;
    stack.flush_redis()?;
    from_pg
        .exact_after(&stack, &answers, &truth, before, "after FLUSHALL")
        .await?;

    // Redis down altogether: answers come from PostgreSQL; then it comes back empty.
    let fallbacks = Counted("analytics_query_redis_fallbacks_total");
    let before = fallbacks.now(&query).await?;
    stack.stop_redis();
    fallbacks
        .exact_after(&stack, &answers, &truth, before, "with Redis down")
        .await?;
    stack.start_redis()?;

    // 3. The processor is SIGKILLed; events keep coming; it restarts and every hour is exact.
    processor.proc.kill9();
    let more = dataset(
        &mut rng,
        2_000,
        &[0, 0, 1, 2, 5],
        analytics_model::clock::now_ms(),
    );
    post_recorded(&command.addr(), &more, 4, &mut truth).await?;
    // Restarted at once, within the killed member's session timeout: the broker must hand
    // the partitions over when the dead member's session ends.
    processor = stack.service("processor", PROCESSOR_ARGS)?;
    processor.wait_ready(Duration::from_secs(60)).await?;
    answers
        .exact(&stack, &truth, LONG, "after processor restart")
        .await?;

    // 4. Redis is flushed repeatedly while events keep arriving. After each flush nobody
    //    reads for a while, so the materializer meets the missing keys first and must rebuild
    //    them whole from PostgreSQL. Answers never go down and end exact.
    let load = dataset(
        &mut rng,
        8_000,
        &[0, 0, 0, 1, 2],
        analytics_model::clock::now_ms(),
    );
    load.iter().for_each(|p| truth.add(p));
    let poster = {
        let addr = command.addr();
        let load = load.clone();
        tokio::spawn(async move { post_all(&addr, &load, 4).await })
    };
    let mut seen: BTreeMap<i64, [u64; 3]> = BTreeMap::new();
    let mut reader = Client::connect(&query.addr()).await?;
    let mut rounds = 0;
    while !poster.is_finished() || rounds < 3 {
        stack.flush_redis()?;
        rounds += 1;
        // A pause without reads, so that the materializer is usually the first to meet the
        // missing keys; the checks below hold whoever rebuilds them, so none depends on it.
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Read PostgreSQL's partitions first, then Redis: an existing key must hold at least
        // every partition PostgreSQL already had.
        for &h in &hours {
            let in_pg: HashSet<String> = stack
                .psql(&format!(
                    "SELECT source_partition FROM hourly_partials WHERE hour_ms = {h}"
                ))?
                .lines()
                .map(str::to_owned)
                .collect();
            let in_redis: HashSet<String> = stack
                .redis_hkeys(&format!("analytics:hour:{h}"))?
                .into_iter()
                .collect();
            ensure!(
                in_redis.is_empty() || in_pg.is_subset(&in_redis),
                "Redis holds an incomplete hour {h} after flush {rounds}: {} of {} partitions",
                in_redis.len(),
                in_pg.len()
            );
        }
        for &h in &hours {
            let now_seen = get_hour(&mut reader, h).await?;
            if let Some(prev) = seen.get(&h) {
                for k in 0..3 {
                    ensure!(
                        now_seen[k] >= prev[k],
                        "hour {h} went down after flush {rounds}: {prev:?} -> {now_seen:?}"
                    );
                }
            }
            seen.insert(h, now_seen);
        }
    }
    ensure!(rounds >= 3, "at least three flushes under load");
    poster.await??;
    answers
        .exact(&stack, &truth, LONG, "after flushes under load")
        .await?;

    // Graceful shutdown exits 0.
    let mut services = [command, processor, materializer, query];
    for s in services.iter_mut() {
        let code = s.proc.terminate(Duration::from_secs(15));
        ensure!(
            code == Some(0),
            "{} exited with {code:?} on SIGTERM:\n{}",
            s.proc.name,
            s.proc.tail(20)
        );
    }
    Ok(())
}

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(90);

/// A counter of the query service that proves where answers came from.
struct Counted(&'static str);

impl Counted {
    async fn now(&self, query: &Service) -> Result<f64> {
        e2e::metric(&query.addr(), self.0).await
    }

    /// Reads every hour until all are exact *and* the counter has grown past `before`: answers
    /// the query service still holds in memory (100 ms in the tests) are exact too but prove
    /// nothing, so this waits for the counter rather than for the cache to expire.
    async fn exact_after(
        &self,
        stack: &Stack,
        answers: &Answers<'_>,
        truth: &Truth,
        before: f64,
        what: &str,
    ) -> Result<()> {
        let deadline = Instant::now() + SHORT;
        loop {
            answers.exact(stack, truth, SHORT, what).await?;
            if self.now(answers.query).await? > before {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{what}: {} never grew", self.0);
        }
    }
}
