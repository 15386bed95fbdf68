//! `make bench`: the benchmarks of docs/benchmarks.md, measured side by side on this machine
//! against baselines from the same run (a bare hyper server, a raw rdkafka producer, a bare
//! consumer), and written to docs/benchmarks.md with a latency plot.
//!
//! Not a test: ignored by `make test`; `make bench` runs it in release mode with
//! `ANALYTICS_BIN_DIR=target/release`. Knobs: `BENCH_SECONDS` (per run, default 10),
//! `BENCH_RUNS` (default 5; sections 1 and 2 run `BENCH_RUNS × BENCH_SECONDS` pairs of 1 s,
//! one more if that is even),
//! `BENCH_CONCURRENCY` (default 64), `BENCH_BACKLOG` (events for the
//! processor benchmark, default 5 000 000), `BENCH_CATCHUP_SECONDS` (the catch-up backlog, in
//! seconds of row 7's batch rate, default 600), `BENCH_OUT` (default docs/benchmarks.md), and
//! `BENCH_GET_ONLY=1`: sections 1 and 2 only, printed and not written (for trying a change
//! to the read path in a couple of minutes), `BENCH_FRESHNESS_ONLY=1`: sections 5 and 5a
//! only, likewise, `BENCH_RANGES_ONLY=1`: section 10 only, printed (`BENCH_RANGE_DAYS`,
//! default 28, and `BENCH_RANGE_USERS`, users an hour, default 20 000), and
//! `BENCH_QUERY_ARGS`: extra flags for the
//! query service, split at spaces (for trying a setting, e.g. `--cache-current-hour 5s`).

mod backlog;
mod batch;
mod catchup;
mod hops;
mod ranges;
mod stats;

use analytics_runtime::metrics::LabelValue;
use anyhow::{ensure, Context, Result};
use backlog::Backlog;
use batch::{batch_run, dedup_costs, BATCH_CLIENTS, BATCH_EVENTS, DEDUP_EVENTS};
use e2e::{Flags, Pipeline, PipelineOptions, Proc, Stack};
use loadgen::report::{Latency, Report};
use loadgen::run::RunConfig;
use loadgen::traffic::Shape;
use stats::{measured, Measured, Stat};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shape(prefix: &str, users: usize, current_hour_share: f64) -> Shape {
    Shape {
        users,
        zipf: 1.1,
        click_share: 0.1,
        current_hour_share,
        hours_back: 5,
        user_prefix: format!("{prefix}-{}-", analytics_model::clock::now_ms()),
    }
}

fn config(
    command: &str,
    query: &str,
    get_share: f64,
    seconds: u64,
    concurrency: usize,
) -> RunConfig {
    RunConfig {
        command: command.to_owned(),
        query: query.to_owned(),
        concurrency,
        rate: None,
        get_share,
        duration: Duration::from_secs(seconds),
        requests: None,
        seed: 42,
        shape: shape("bench", 100_000, 0.95),
        verify: false,
        verify_timeout: Duration::from_secs(60),
        freshness_probes: 0,
        progress: false,
    }
}

async fn http_run(cfg: &RunConfig, i: u64, get: bool, what: &str) -> Result<Latency> {
    let mut c = cfg.clone();
    c.seed = 42 + i;
    let r: Report = loadgen::run::run(c).await?;
    let l = if get { r.get.clone() } else { r.post.clone() };
    let l = l.context("no answers")?;
    let ok = r
        .statuses
        .iter()
        .filter(|(k, _)| k.ends_with(" 200") || k.ends_with(" 204"))
        .map(|(_, v)| v)
        .sum::<u64>();
    ensure!(
        ok == r.requests && r.transport_errors == 0,
        "{what} run {i}: not every request succeeded: {r}"
    );
    eprintln!(
        "  run {i} {what}: {:.0}/s p50 {:.3} ms p99 {:.3} ms",
        l.per_second, l.p50_ms, l.p99_ms
    );
    Ok(l)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    format!(
        "{cores} cores ({model}), load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark, not a test: run with make bench"]
async fn bench() -> Result<()> {
    let seconds = env_u64("BENCH_SECONDS", 10);
    let runs = env_u64("BENCH_RUNS", 5).max(1);
    let concurrency = env_u64("BENCH_CONCURRENCY", 64) as usize;
    let backlog = env_u64("BENCH_BACKLOG", 5_000_000);
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md"));
    let (range_days, range_users) = (
        env_u64("BENCH_RANGE_DAYS", 28) as i64,
        env_u64("BENCH_RANGE_USERS", 20_000),
    );
    if env_u64("BENCH_RANGES_ONLY", 0) == 1 {
        let r = ranges::measure(range_days, range_users).await?;
        eprintln!("{}", range_rows(&r, None)?);
        return Ok(());
    }
    let started = Instant::now();
    let machine_before = machine();
    eprintln!("bench: {machine_before}; {runs} runs of {seconds} s at {concurrency} clients");

    let stack = Stack::start()?;
    let query_args = std::env::var("BENCH_QUERY_ARGS").unwrap_or_default();
    let query_args: Vec<&str> = query_args.split_whitespace().collect();
    // The services' own defaults, not the tests' flags.
    let pipeline = Pipeline::spawn(
        &stack,
        PipelineOptions {
            command: Flags::args(&[]),
            processor: Flags::args(&[]),
            processors: 1,
            materializer: Flags::args(&[]),
            query: Flags::args(&query_args),
        },
    )?;
    for s in pipeline.services() {
        s.wait_ready(Duration::from_secs(120)).await?;
    }
    let Pipeline {
        command,
        mut processor,
        materializer,
        query,
        ..
    } = pipeline;
    // 5. Freshness first, while the broker's log is short: the local broker's in-memory
    //    engine answers fetches more slowly as a partition's log grows (docs/operations.md,
    //    "Local broker"), and the POST runs of section 3 leave hundreds of thousands of small
    //    batches, which slowed every consumer's fetch tenfold in the run that showed it
    //    (docs/benchmarks-notes.md).
    let timers = hops::Services {
        command: &command,
        processor: &processor,
        materializer: &materializer,
        query: &query,
    };
    let (fresh, hop_times) = freshness(&timers, runs, seconds).await?;
    if env_u64("BENCH_FRESHNESS_ONLY", 0) == 1 {
        return Ok(());
    }
    let baseline_port = e2e::free_port();
    let mut cmd = Command::new(stack.bin("loadgen"));
    cmd.args([
        "baseline",
        "--listen",
        &format!("127.0.0.1:{baseline_port}"),
    ]);
    let _baseline = Proc::spawn("baseline", cmd, &stack.dir)?;
    e2e::wait_port(baseline_port, Duration::from_secs(10), "baseline")?;
    let baseline_addr = format!("127.0.0.1:{baseline_port}");

    // 1 and 2. The HTTP ceiling and GET at the 95/5 mix with data present, run alternately
    //    so that both see the same neighbours on this shared machine.
    eprintln!("2. populating the query side");
    let mut populate = config(&command.addr(), &query.addr(), 0.0, 60, 32);
    populate.requests = Some(20_000);
    populate.verify = true;
    let filled = loadgen::run::run(populate).await?;
    ensure!(
        filled.verification.as_ref().is_some_and(|v| v.exact),
        "populating: {filled}"
    );
    eprintln!("1 and 2. bare hyper server, query GET and GET through the front door, alternately");
    let front = stack.front_door(&[command.addr()], &[query.addr()])?;
    let (mut base_runs, mut get_runs, mut front_runs) = (Vec::new(), Vec::new(), Vec::new());
    // Pairs of 1 s runs, as many as the seconds of the other sections' runs (about the same
    // time in all): the two runs of a pair are a second apart, so they see nearly the same
    // neighbours on this shared machine, and the median of some fifty pairs moves little
    // (with pairs of 5 s the medians of nine moved by ±0.03 between invocations; with 1 s
    // the middle half of the pairs spans about 0.05, docs/benchmarks-notes.md). Which of the
    // two runs first alternates, so neither server always follows the other.
    let (get_pairs, get_seconds) = ((runs * seconds) | 1, 1);
    let get_only = |cmd: &str, q: &str| config(cmd, q, 1.0, get_seconds, concurrency);
    for i in 0..get_pairs {
        let base_cfg = get_only("", &baseline_addr);
        let get_cfg = get_only(&command.addr(), &query.addr());
        if i % 2 == 0 {
            base_runs.push(http_run(&base_cfg, i, true, "baseline").await?);
            get_runs.push(http_run(&get_cfg, i, true, "query GET").await?);
        } else {
            get_runs.push(http_run(&get_cfg, i, true, "query GET").await?);
            base_runs.push(http_run(&base_cfg, i, true, "baseline").await?);
        }
        let c = get_only(&command.addr(), &front.addr());
        front_runs.push(http_run(&c, i, true, "query GET through nginx").await?);
    }
    let (base, get, through) = (
        measured(&base_runs),
        measured(&get_runs),
        measured(&front_runs),
    );
    if env_u64("BENCH_GET_ONLY", 0) == 1 {
        let ratios: Vec<f64> = get_runs
            .iter()
            .zip(&base_runs)
            .map(|(g, b)| g.per_second / b.per_second)
            .collect();
        eprintln!("bench: query GET / bare server, per pair: {ratios:.2?}");
        eprintln!(
            "bench: query GET / bare server: {}",
            Stat::of(ratios).cell_quartiles(2)
        );
        let front: Vec<f64> = front_runs
            .iter()
            .zip(&get_runs)
            .map(|(f, g)| f.per_second / g.per_second)
            .collect();
        eprintln!(
            "bench: query GET through the front door / direct: {}",
            Stat::of(front).cell_quartiles(2)
        );
        return Ok(());
    }

    // 3. POST with acknowledged writes, and the raw producer with as many writes in flight,
    //    alternately (the local broker slows down as its log grows).
    eprintln!("3. command POST and raw producer, alternately");
    let (mut post_runs, mut raw_runs) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let c = config(&command.addr(), &query.addr(), 0.0, seconds, concurrency);
        let p = http_run(&c, i, false, "command POST").await?;
        let events = p.count.max(10_000);
        post_runs.push(p);
        let l = loadgen::kafka::produce(
            &stack.kafka_brokers(),
            "analytics.events",
            events,
            concurrency,
            2,
            shape("raw", 100_000, 0.95),
            100 + i,
        )
        .await?;
        eprintln!(
            "  run {i} raw producer: {:.0}/s p50 {:.3} ms p99 {:.3} ms",
            l.per_second, l.p50_ms, l.p99_ms
        );
        raw_runs.push(l);
    }
    let post = measured(&post_runs);
    let raw = measured(&raw_runs);

    // 4 and 6. A backlog for the processor, the bare consumer reading as much, and the
    //    processor's memory per tracked (hour, user) pair.
    let Backlog {
        bare,
        processor_rate,
        per_pair,
        pairs,
        rss,
    } = backlog::measure(&stack, &mut processor, backlog).await?;

    // 7. Batch ingest: NDJSON batches of 1 000 acknowledged events from a few clients, next
    //    to the raw producer with as many events in flight. Last of the HTTP runs: the
    //    millions of events they write would keep the pipeline busy during sections 4-6.
    eprintln!("7. batch ingest and raw producer, alternately");
    let (mut batch_rates, mut raw_batch_rates) = (Vec::new(), Vec::new());
    let (mut gzip_rates, mut gzip_ratios) = (Vec::new(), Vec::new());
    let mut wire = [0.0f64; 2];
    for i in 0..runs {
        let plain = batch_run(
            &command.addr(),
            BATCH_CLIENTS,
            BATCH_EVENTS,
            seconds,
            i,
            false,
        )
        .await?;
        let rate = plain.rate;
        eprintln!("  run {i} batch: {rate:.0} events/s");
        let zipped = batch_run(
            &command.addr(),
            BATCH_CLIENTS,
            BATCH_EVENTS,
            seconds,
            100 + i,
            true,
        )
        .await?;
        eprintln!("  run {i} gzip batch: {:.0} events/s", zipped.rate);
        gzip_rates.push(zipped.rate);
        gzip_ratios.push(zipped.rate / rate);
        wire = [plain.bytes_per_event, zipped.bytes_per_event];
        let l = loadgen::kafka::produce(
            &stack.kafka_brokers(),
            "analytics.events",
            ((rate * seconds as f64) as u64).max(20_000),
            BATCH_CLIENTS * BATCH_EVENTS,
            2,
            shape("rawbatch", 100_000, 0.95),
            300 + i,
        )
        .await?;
        eprintln!(
            "  run {i} raw producer, {} in flight: {:.0}/s",
            BATCH_CLIENTS * BATCH_EVENTS,
            l.per_second
        );
        batch_rates.push(rate);
        raw_batch_rates.push(l.per_second);
    }
    let (gzip, gzip_ratio) = (Stat::of(gzip_rates), Stat::of(gzip_ratios));
    let batch = Stat::of(batch_rates.clone());
    let raw_batch = Stat::of(raw_batch_rates.clone());
    let batch_ratio = Stat::of(
        batch_rates
            .iter()
            .zip(&raw_batch_rates)
            .map(|(b, r)| if *r > 0.0 { b / r } else { 0.0 })
            .collect(),
    );

    // 9. Catching up: a backlog of ten minutes (by default) at the batch rate just measured.
    let catchup_seconds = env_u64("BENCH_CATCHUP_SECONDS", 600);
    let catchup_events = (batch.median * catchup_seconds as f64) as u64;
    let catch_up = catchup::measure(
        catchup_events.max(100_000),
        Shape {
            users: 1_000_000,
            zipf: 0.0,
            ..shape("catchup", 0, 0.95)
        },
    )
    .await?;

    // 10. Exact unique users over ranges, on a stack of its own.
    let ranges = ranges::measure(range_days, range_users).await?;

    // 8. Deduplication in the processor's state, in process: events/s through the state with
    //    and without ids, and the bytes of the remembered-id tables per id.
    eprintln!("8. deduplication cost");
    let dedup = tokio::task::spawn_blocking(dedup_costs).await?;
    eprintln!(
        "  without ids {:.0}/s, with ids {:.0}/s, {:.1} bytes per remembered id",
        dedup.without_ids, dedup.with_ids, dedup.bytes_per_id
    );

    let machine_after = machine();
    let plot = out.with_file_name("benchmarks-latency.png");
    loadgen::plot::latency_png(
        &plot,
        &[
            ("bare hyper (GET)", &base.median_run),
            ("query GET", &get.median_run),
            ("raw producer", &raw.median_run),
            ("command POST", &post.median_run),
        ],
    )?;

    let mut md = String::new();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `make bench` (`e2e/tests/bench/`, load from `loadgen`). Every figure is the \
         median of {runs} runs of {seconds} s (rows 1, 2 and 2b: {get_pairs} runs of \
         {get_seconds} s, which of a pair first alternating), with min and max in parentheses, \
         all measured in one invocation on the same machine, each baseline run next to a run \
         of what it is compared with; the ratios to the baselines are what count, the \
         absolute numbers depend on the machine and its neighbours. The load generator shares \
         the cores with the servers.\n"
    )?;
    writeln!(md, "- machine before: {machine_before}")?;
    writeln!(md, "- machine after: {machine_after}")?;
    writeln!(
        md,
        "- {concurrency} closed-loop clients per HTTP run; total time {:.0} s\n",
        started.elapsed().as_secs_f64()
    )?;
    writeln!(md, "![latency percentiles](benchmarks-latency.png)\n")?;
    writeln!(
        md,
        "| # | what | throughput /s | p50 ms | p99 ms | ratio | target | met |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |")?;
    // Ratios pair each run with the baseline run next to it, then take the median: the
    // machine's neighbours change from minute to minute, not within a pair.
    let paired = |a: &[Latency], b: &[Latency], f: fn(&Latency) -> f64| {
        Stat::of(a.iter().zip(b).map(|(x, y)| ratio(f(x), f(y))).collect())
    };
    let tput_get = paired(&get_runs, &base_runs, |l| l.per_second);
    let p99_get = paired(&get_runs, &base_runs, |l| l.p99_ms);
    let tput_post = paired(&post_runs, &raw_runs, |l| l.per_second);
    let (tput_ratio_get, p99_ratio_get, tput_ratio_post) =
        (tput_get.median, p99_get.median, tput_post.median);
    let proc_ratio = ratio(processor_rate, bare);
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    writeln!(
        md,
        "| 1 | bare hyper server, GET | {} | {} | {} | 1 | baseline | |",
        base.throughput.cell(0),
        base.p50.cell(3),
        base.p99.cell(3)
    )?;
    writeln!(md, "| 2 | query GET, 95% current hour | {} | {} | {} | {} of throughput, {}× p99 | ≥ 0.95, ≤ 2× | {} |", get.throughput.cell(0), get.p50.cell(3), get.p99.cell(3), tput_get.cell_quartiles(2), p99_get.cell(2), yes(tput_ratio_get >= 0.95 && p99_ratio_get <= 2.0))?;
    let tput_front = paired(&front_runs, &get_runs, |l| l.per_second);
    writeln!(md, "| 2b | query GET through the front door (nginx) | {} | {} | {} | {} of direct GET (row 2) | | |", through.throughput.cell(0), through.p50.cell(3), through.p99.cell(3), tput_front.cell_quartiles(2))?;
    writeln!(md, "| 3a | raw rdkafka producer, acks=all, {concurrency} in flight | {} | {} | {} | 1 | baseline | |", raw.throughput.cell(0), raw.p50.cell(3), raw.p99.cell(3))?;
    writeln!(md, "| 3 | command POST (204 after the ack) | {} | {} | {} | {} of throughput | ≥ 0.60, p99 < 25 ms | {} |", post.throughput.cell(0), post.p50.cell(3), post.p99.cell(3), tput_post.cell(2), yes(tput_ratio_post >= 0.6 && post.p99.median < 25.0))?;
    writeln!(
        md,
        "| 4a | bare consumer, {backlog} events | {bare:.0} | | | 1 | baseline | |"
    )?;
    writeln!(md, "| 4 | processor, backlog of {backlog} events (the materializer reading its changelog into membership meanwhile) | {processor_rate:.0} | | | {proc_ratio:.2} | ≥ 0.60 (stretch 0.9) | {} |", yes(proc_ratio >= 0.6))?;
    writeln!(
        md,
        "| 5 | freshness, 204 → visible in GET, 500 writes/s | | {} | {} | | p99 < 400 ms in every run | {} |",
        fresh.p50.cell(1),
        fresh.p99.cell(1),
        yes(fresh.p99.max < 400.0)
    )?;
    let hop_cells: Vec<String> = hop_times
        .iter()
        .map(|(hop, _, p50, p99)| format!("{} {p50:.0} / {p99:.0}", hop.as_str()))
        .collect();
    writeln!(
        md,
        "| 5a | where the time of row 5 goes: each hop from the receipt at the command, p50 / p99 ms (the services' `analytics_pipeline_hop_seconds`) | | | | {} | | |",
        hop_cells.join(", ")
    )?;
    writeln!(md, "| 6 | processor memory per tracked (hour, user) pair: RSS growth over the backlog ÷ pairs | {per_pair:.1} bytes ({pairs:.0} pairs, RSS {:.0} MB) | | | | ≤ 40 bytes | {} |", rss / 1e6, yes(per_pair <= 40.0))?;
    writeln!(
        md,
        "| 7a | raw rdkafka producer, {} in flight | {} | | | 1 | baseline | |",
        BATCH_CLIENTS * BATCH_EVENTS,
        raw_batch.cell(0)
    )?;
    writeln!(md, "| 7 | `POST /analytics/batch`, {BATCH_CLIENTS} clients × {BATCH_EVENTS} events, 200 after every ack | {} events | | | {} | ≥ 0.80 | {} |", batch.cell(0), batch_ratio.cell(2), yes(batch_ratio.median >= 0.8))?;
    writeln!(md, "| 7c | the same batches gzipped (`Content-Encoding: gzip`, level 6, compressed by the client), run after each of row 7's; body bytes on the wire per event, plain vs gzip: {:.1} vs {:.1} | {} events | | | {} of row 7 | | |", wire[0], wire[1], gzip.cell(0), gzip_ratio.cell(2))?;
    writeln!(
        md,
        "| 7b | single POSTs (row 3) vs batches (row 7), events/s | {} vs {} | | | {:.1}× | | |",
        post.throughput.cell(0),
        batch.cell(0),
        ratio(batch.median, post.throughput.median)
    )?;
    writeln!(md, "| 8 | processor state, events with ids vs without (in process, {} events) | {:.0} vs {:.0} | | | {:.2} | | |", DEDUP_EVENTS, dedup.with_ids, dedup.without_ids, ratio(dedup.with_ids, dedup.without_ids))?;
    writeln!(md, "| 8a | processor memory per remembered id (bytes allocated for them ÷ ids, {} ids) | {:.1} bytes | | | | ≤ 24 bytes | {} |", dedup.ids, dedup.bytes_per_id, yes(dedup.bytes_per_id <= 24.0))?;
    writeln!(md, "| 9 | catch-up: a backlog of {catchup_seconds} s of row 7's rate ({} events), from the processor's start to the last hour exact in GET | {:.0} events/s | | | {:.1} s | | |", catch_up.events, catch_up.rate, catch_up.seconds)?;
    write!(md, "{}", range_rows(&ranges, Some(proc_ratio))?)?;
    writeln!(md, "\nSections 4, 6, 9 and 10 are a single run (a backlog of {backlog} events takes minutes to build on the local broker).")?;
    writeln!(
        md,
        "\n{}",
        std::fs::read_to_string(out.with_file_name("benchmarks-notes.md")).unwrap_or_default()
    )?;
    std::fs::write(&out, md).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "bench: wrote {} in {:.0} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The rows of section 10; with row 4's ratio when the whole bench ran.
fn range_rows(r: &ranges::Ranges, proc_ratio: Option<f64>) -> Result<String> {
    use ranges::{median, percentile};
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    let mut md = String::new();
    for row in &r.rows {
        let (p50, p99) = (median(&row.total), percentile(&row.total, 0.99));
        let (b50, b99) = (median(&row.baseline), percentile(&row.baseline, 0.99));
        let speedup = b50 / p50;
        let (target, met) = match row.days {
            7 => (
                "≥ 10× faster, p50 < 250 ms",
                yes(speedup >= 10.0 && p50 < 250.0),
            ),
            _ => ("", ""),
        };
        writeln!(md, "| 10 | `GET /analytics/total`, the last {} days ({} distinct users, exact; {} timed requests, p99 the slowest) | | {p50:.1} | {p99:.1} | {speedup:.0}× faster than PostgreSQL's `count(DISTINCT user_id)` over the same raw pairs with an index on the hour (p50 {b50:.0} ms, slowest of {} {b99:.0} ms, the same answer) | {target} | {met} |", row.days, row.users, row.total.len(), row.baseline.len())?;
    }
    let total: i64 = r.bytes.iter().sum();
    let per_pair = total as f64 / r.pairs as f64;
    let mb = |b: i64| b as f64 / 1e6;
    writeln!(md, "| 10a | membership bytes in PostgreSQL (tables, TOAST and indexes) per (hour, user) pair: {} events, {} pairs, through the pipeline and exact in {:.0} s | {per_pair:.2} bytes (dictionary {:.1} MB, hour sets {:.1} MB, day sets {:.1} MB) | | | | ≤ 8 (stretch ≤ 3) | {} |", r.events, r.pairs, r.load_seconds, mb(r.bytes[0]), mb(r.bytes[1]), mb(r.bytes[2]), yes(per_pair <= 8.0))?;
    let (d50, d99) = (median(&r.paris_days), percentile(&r.paris_days, 0.99));
    writeln!(md, "| 10c | `GET /analytics?interval=day&tz=Europe/Paris` over the whole history: one row per Paris day, each a union of its 24 hour sets per partition (a Paris day is not a UTC day, so no day set serves it); {} timed requests | | {d50:.1} | {d99:.1} | | | |", r.paris_days.len())?;
    if let Some(ratio) = proc_ratio {
        writeln!(md, "| 10b | processor with membership on: row 4's ratio against 0.85, row 4 of the last run before membership (2026-12-06) | | | | {:.2} | ≥ 0.90 | {} |", ratio / 0.85, yes(ratio / 0.85 >= 0.9))?;
    }
    Ok(md)
}

/// Section 5 and 5a: freshness under a steady moderate write load (the load writes earlier
/// hours, the probes own the current hour), and where its time goes, hop by hop.
async fn freshness(
    timers: &hops::Services<'_>,
    runs: u64,
    seconds: u64,
) -> Result<(
    Measured,
    Vec<(analytics_runtime::metrics::Hop, f64, f64, f64)>,
)> {
    let (command, query) = (timers.command, timers.query);
    eprintln!("5. freshness");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let hops_before = hops::snapshot(timers).await?;
    let mut fresh_runs = Vec::new();
    for i in 0..runs {
        let mut c = config(&command.addr(), &query.addr(), 0.0, seconds.max(10), 8);
        c.rate = Some(500.0);
        c.seed = 200 + i;
        c.shape = shape("fresh", 100_000, 0.0);
        c.freshness_probes = (seconds.max(10) * 10) as u32;
        let r = loadgen::run::run(c).await?;
        let f = r.freshness.clone().context("no probe answered")?;
        eprintln!(
            "  run {i}: {} probes, p50 {:.1} ms p99 {:.1} ms",
            f.count, f.p50_ms, f.p99_ms
        );
        fresh_runs.push(f);
    }
    let hop_times = hops::between(&hops_before, &hops::snapshot(timers).await?);
    for (hop, n, p50, p99) in &hop_times {
        eprintln!(
            "  {}: {n:.0} timed, p50 {p50:.1} ms, p99 {p99:.1} ms",
            hop.as_str()
        );
    }
    Ok((measured(&fresh_runs), hop_times))
}
