//! Chaos: continuous load while instances are killed, added, removed and frozen, the broker,
//! Redis and PostgreSQL go away, and bursts of clients outrun the broker, following a seeded
//! random schedule. Every hour must end within the books kept by the load driver (at least
//! every request answered 204; at most those plus the requests whose fate is unknown, see
//! `e2e::driver`), and no read may ever go down.
//!
//! Each kind of fault is injected once, in a random order, before the schedule draws at
//! random. `make test` runs the short schedule (60 s; processor and materializer crashes,
//! scale-out and scale-in, Redis flushes). `make chaos` runs `CHAOS_SECONDS=600 CHAOS_FULL=1`: every
//! fault of the table: also command crashes, a frozen processor (zombie), Redis and
//! PostgreSQL outages, the broker off the network for 30 s (`e2e::relay`), the broker process
//! stopped or killed and started again on its SQLite data, and overload bursts. The seed is
//! printed; replay with `CHAOS_SEED=<seed>`.

use anyhow::{ensure, Result};
use e2e::driver::{verify, verify_totals, Load};
use e2e::workload::Rng;
use e2e::{
    Flags, Options, Pipeline, PipelineOptions, Service, Stack, MATERIALIZER_ARGS, PROCESSOR_ARGS,
};
use std::time::{Duration, Instant};

/// A producer queue small enough that this machine's clients can outrun the broker, and a
/// connection limit below the overload burst.
const COMMAND_ARGS: &[&str] = &["--producer-max-queued", "256", "--max-connections", "200"];
/// Clients added by the overload fault.
const OVERLOAD_CONNECTIONS: u64 = 300;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

struct Cluster {
    stack: Stack,
    command: Service,
    command_port: u16,
    processors: Vec<Service>,
    materializers: Vec<Service>,
    query: Service,
}

impl Cluster {
    fn restart_processor(&mut self, i: usize) -> Result<()> {
        self.processors[i] = self.stack.service("processor", PROCESSOR_ARGS)?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_under_random_faults() -> Result<()> {
    let seconds = env_u64("CHAOS_SECONDS").unwrap_or(60);
    let full = std::env::var_os("CHAOS_FULL").is_some();
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(|| analytics_model::clock::now_ms() as u64);
    eprintln!(
        "chaos: seed {seed}, {seconds} s, {} faults (replay with CHAOS_SEED={seed})",
        if full { "all" } else { "short-run" }
    );

    // Only the full run takes the broker off the network (through a relay) and restarts it
    // (on its SQLite data).
    let stack = Stack::start_with(Options {
        relayed: full,
        persistent_broker: full,
    })?;
    eprintln!("chaos: servers' logs and data in {}", stack.dir.display());
    let pipeline = Pipeline::start(
        &stack,
        PipelineOptions {
            command: Flags::args(COMMAND_ARGS),
            ..PipelineOptions::default()
        },
    )
    .await?;
    // The command is restarted where the load drivers expect it.
    let mut cl = Cluster {
        command_port: pipeline.command.port,
        command: pipeline.command,
        processors: vec![pipeline.processor],
        materializers: vec![pipeline.materializer],
        query: pipeline.query,
        stack,
    };

    let load = Load::start(&cl.command.addr(), &cl.query.addr(), 4, seed);
    let load_hours = load.watched.clone();

    // The fault schedule.
    let mut rng = Rng::seeded(seed ^ 0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let kinds = if full { 13 } else { 5 };
    // Every kind once, in a random order, then random draws: a run long enough to get
    // through the first round is sure to have injected every fault.
    let mut first_round: Vec<u64> = (0..kinds).collect();
    for i in (1..first_round.len()).rev() {
        first_round.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut first_round = first_round.into_iter();
    // Every sleep below is the schedule itself (the pause between faults, or how long a fault
    // lasts: a process down, frozen, or a store away), not a wait for a condition.
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(2000 + rng.below(4000))).await;
        let t = started.elapsed().as_secs();
        let kind = first_round.next().unwrap_or_else(|| rng.below(kinds));
        match kind {
            0 => {
                let i = rng.below(cl.processors.len() as u64) as usize;
                eprintln!("[{t:>4}s] SIGKILL processor {i}");
                cl.processors[i].proc.kill9();
                tokio::time::sleep(Duration::from_millis(rng.below(3000))).await;
                cl.restart_processor(i)?;
            }
            1 => {
                if cl.processors.len() < 3 {
                    eprintln!(
                        "[{t:>4}s] add a processor ({} running)",
                        cl.processors.len()
                    );
                    cl.processors
                        .push(cl.stack.service("processor", PROCESSOR_ARGS)?);
                } else {
                    eprintln!("[{t:>4}s] stop a processor (SIGTERM)");
                    let mut p = cl.processors.pop().expect("three running");
                    p.proc.terminate(Duration::from_secs(15));
                }
            }
            2 => {
                let i = rng.below(cl.materializers.len() as u64) as usize;
                eprintln!("[{t:>4}s] SIGKILL materializer {i}");
                cl.materializers[i].proc.kill9();
                tokio::time::sleep(Duration::from_millis(rng.below(2000))).await;
                cl.materializers[i] = cl.stack.service("materializer", MATERIALIZER_ARGS)?;
            }
            3 => {
                eprintln!("[{t:>4}s] FLUSHALL Redis");
                cl.stack.flush_redis()?;
            }
            4 => {
                if cl.materializers.len() < 2 {
                    eprintln!("[{t:>4}s] add a materializer");
                    cl.materializers
                        .push(cl.stack.service("materializer", MATERIALIZER_ARGS)?);
                } else {
                    eprintln!("[{t:>4}s] stop a materializer (SIGTERM)");
                    let mut m = cl.materializers.pop().expect("two running");
                    m.proc.terminate(Duration::from_secs(15));
                }
            }
            5 => {
                eprintln!("[{t:>4}s] SIGKILL command (in-flight requests may or may not count)");
                cl.command.proc.kill9();
                tokio::time::sleep(Duration::from_millis(rng.below(2000))).await;
                cl.command = cl
                    .stack
                    .service_on("command", cl.command_port, COMMAND_ARGS)?;
            }
            6 => {
                let i = rng.below(cl.processors.len() as u64) as usize;
                eprintln!(
                    "[{t:>4}s] freeze processor {i} past its session timeout (zombie), then resume"
                );
                cl.processors[i].proc.freeze(true);
                tokio::time::sleep(Duration::from_secs(6)).await;
                cl.processors[i].proc.freeze(false);
            }
            7 => {
                eprintln!("[{t:>4}s] stop Redis for 5 s, restart it empty");
                cl.stack.stop_redis();
                tokio::time::sleep(Duration::from_secs(5)).await;
                cl.stack.start_redis()?;
            }
            8 => {
                eprintln!("[{t:>4}s] stop PostgreSQL for 5 s, restart it");
                cl.stack.stop_postgres();
                tokio::time::sleep(Duration::from_secs(5)).await;
                cl.stack.start_postgres_server()?;
            }
            9 => {
                eprintln!("[{t:>4}s] Redis flushed three times in a row under load");
                for _ in 0..3 {
                    cl.stack.flush_redis()?;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            10 => {
                eprintln!("[{t:>4}s] broker off the network for 30 s, then back");
                cl.stack.cut_broker()?;
                tokio::time::sleep(Duration::from_secs(30)).await;
                cl.stack.restore_broker()?;
            }
            11 => {
                let crash = rng.below(2) == 0;
                let down = Duration::from_millis(5000 + rng.below(15_000));
                eprintln!(
                    "[{t:>4}s] broker process {} for {down:?}, then started on its data",
                    if crash {
                        "SIGKILLed"
                    } else {
                        "stopped (SIGTERM)"
                    }
                );
                cl.stack.stop_broker(crash);
                tokio::time::sleep(down).await;
                cl.stack.start_broker()?;
            }
            _ => {
                let before = load.snapshot();
                load.burst(
                    &cl.command.addr(),
                    OVERLOAD_CONNECTIONS,
                    Duration::from_secs(5),
                    rng.next_u64(),
                )
                .await?;
                let after = load.snapshot();
                eprintln!(
                    "[{t:>4}s] overload: {OVERLOAD_CONNECTIONS} more clients for 5 s: {} acknowledged, {} refused; command RSS {} MiB",
                    after.acknowledged - before.acknowledged,
                    after.refused - before.refused,
                    cl.command.proc.rss_bytes().unwrap_or(0) >> 20
                );
            }
        }
    }

    let ledger = load.finish().await?;
    eprintln!(
        "chaos: {} events acknowledged, {} refused with 503 (not stored), {} unacknowledged 503s, {} without an answer, {} re-sends of events with ids; slowest answer {:?}",
        ledger.acknowledged, ledger.refused, ledger.unacknowledged, ledger.cut_off, ledger.retries, ledger.slowest
    );
    ensure!(
        ledger.acknowledged > 1000,
        "the load driver got too few acknowledgements ({})",
        ledger.acknowledged
    );
    ensure!(
        ledger.missing_retry_after == 0,
        "{} 503s without Retry-After",
        ledger.missing_retry_after
    );
    verify(
        &cl.stack,
        &cl.query.addr(),
        &ledger,
        &load_hours,
        Duration::from_secs(180),
        &format!("final counts (seed {seed})"),
    )
    .await?;
    verify_totals(
        &cl.query.addr(),
        &ledger,
        Duration::from_secs(60),
        &format!("final totals (seed {seed})"),
    )
    .await
}
