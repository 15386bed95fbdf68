use analytics_model::duration::parse_duration;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use loadgen::traffic::Shape;
use std::time::Duration;

/// Load generator and verifier for the hourly analytics pipeline, and benchmark baselines.
#[derive(Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send realistic traffic to the command and query services and report latency.
    Run(RunArgs),
    /// Serve the three-line body from a bare hyper server (the HTTP baseline).
    Baseline {
        /// Address to listen on.
        #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8090")]
        listen: String,
    },
    /// Produce events straight to the events topic with a raw rdkafka producer.
    Produce(ProduceArgs),
    /// Read a topic from the beginning with a bare consumer; print records per second.
    /// The broker alone: the time from a write to its read by a consumer waiting for it, one
    /// record at a time (does the broker answer a waiting fetch when data arrive?).
    FetchLatency {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// An existing topic; records go to its partition 0.
        #[arg(long, default_value = "analytics.dead-letter")]
        topic: String,
        #[arg(long, default_value_t = 200)]
        samples: u64,
        /// Time between two records.
        #[arg(long, default_value = "250ms", value_parser = parse_duration)]
        interval: Duration,
        /// The consumer's `fetch.wait.max.ms`.
        #[arg(long, default_value_t = 100)]
        fetch_wait_ms: u32,
    },
    Consume {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, env = "EVENTS_TOPIC", default_value = "analytics.events")]
        topic: String,
        /// Records to read.
        #[arg(long)]
        events: u64,
    },
}

#[derive(Args, Clone)]
struct ShapeArgs {
    /// Distinct users.
    #[arg(long, env = "LOADGEN_USERS", default_value_t = 100_000)]
    users: usize,
    /// Zipf exponent of user popularity (0 = uniform).
    #[arg(long, env = "LOADGEN_ZIPF", default_value_t = 1.1)]
    zipf: f64,
    /// Share of writes that are clicks.
    #[arg(long, env = "LOADGEN_CLICK_SHARE", default_value_t = 0.1)]
    click_share: f64,
    /// Share of requests for the current hour; the rest go to earlier hours.
    #[arg(long, env = "LOADGEN_CURRENT_HOUR_SHARE", default_value_t = 0.95)]
    current_hour_share: f64,
    /// Earlier hours reached by the other requests.
    #[arg(long, env = "LOADGEN_HOURS_BACK", default_value_t = 5)]
    hours_back: i64,
    /// Random seed (the same seed sends the same requests).
    #[arg(long, env = "LOADGEN_SEED", default_value_t = 42)]
    seed: u64,
}

impl ShapeArgs {
    fn shape(&self) -> Shape {
        Shape {
            users: self.users,
            zipf: self.zipf,
            click_share: self.click_share,
            current_hour_share: self.current_hour_share,
            hours_back: self.hours_back,
            // Users of different runs never coincide, so verification can add counts up.
            user_prefix: format!("lg{}-", analytics_model::clock::now_ms()),
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Address of the command service.
    #[arg(long, env = "LOADGEN_COMMAND", default_value = "127.0.0.1:8081")]
    command: String,
    /// Address of the query service.
    #[arg(long, env = "LOADGEN_QUERY", default_value = "127.0.0.1:8082")]
    query: String,
    /// Concurrent clients (closed loop: each waits for its answer).
    #[arg(long, env = "LOADGEN_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Total requests per second (default: as fast as the answers come).
    #[arg(long, env = "LOADGEN_RATE")]
    rate: Option<f64>,
    /// Share of GETs (the rest are POSTs).
    #[arg(long, env = "LOADGEN_GET_SHARE", default_value_t = 0.5)]
    get_share: f64,
    /// How long to run.
    #[arg(long, env = "LOADGEN_DURATION", default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests.
    #[arg(long, env = "LOADGEN_REQUESTS")]
    requests: Option<u64>,
    /// After the run, check every touched hour against the acknowledged writes.
    #[arg(long, env = "LOADGEN_VERIFY")]
    verify: bool,
    /// How long verification waits for the pipeline to catch up.
    #[arg(long, env = "LOADGEN_VERIFY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    verify_timeout: Duration,
    /// Freshness probes (POST a click, poll GET until counted); needs --current-hour-share 0.
    #[arg(long, env = "LOADGEN_FRESHNESS_PROBES", default_value_t = 0)]
    freshness_probes: u32,
    /// Write the results as JSON to this file.
    #[arg(long, env = "LOADGEN_JSON")]
    json: Option<std::path::PathBuf>,
    /// No progress line.
    #[arg(long, env = "LOADGEN_QUIET")]
    quiet: bool,
    #[command(flatten)]
    shape: ShapeArgs,
}

#[derive(Args)]
struct ProduceArgs {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, env = "EVENTS_TOPIC", default_value = "analytics.events")]
    topic: String,
    /// Events to produce.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Sends kept in flight (like concurrent HTTP clients waiting for their 204).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Producer linger in milliseconds (the command's default is 2 ms).
    #[arg(long, default_value_t = 2)]
    linger_ms: u32,
    /// Write the latency summary as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[command(flatten)]
    shape: ShapeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(a) => {
            let cfg = loadgen::run::RunConfig {
                command: a.command,
                query: a.query,
                concurrency: a.concurrency.max(1),
                rate: a.rate,
                get_share: a.get_share,
                duration: a.duration,
                requests: a.requests,
                seed: a.shape.seed,
                shape: a.shape.shape(),
                verify: a.verify,
                verify_timeout: a.verify_timeout,
                freshness_probes: a.freshness_probes,
                progress: !a.quiet,
            };
            let report = loadgen::run::run(cfg).await?;
            print!("{report}");
            if let Some(path) = a.json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if report.verification.as_ref().is_some_and(|v| !v.exact) {
                std::process::exit(1);
            }
        }
        Command::Baseline { listen } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            eprintln!("baseline listening on {}", listener.local_addr()?);
            loadgen::baseline::serve(listener).await?;
        }
        Command::Produce(a) => {
            let l = loadgen::kafka::produce(
                &a.brokers,
                &a.topic,
                a.events,
                a.in_flight.max(1),
                a.linger_ms,
                a.shape.shape(),
                a.shape.seed,
            )
            .await?;
            println!(
                "{} events acknowledged: {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                l.count, l.per_second, l.p50_ms, l.p99_ms, l.max_ms
            );
            if let Some(path) = a.json {
                std::fs::write(&path, serde_json::to_vec_pretty(&l)?)?;
            }
        }
        Command::FetchLatency {
            brokers,
            topic,
            samples,
            interval,
            fetch_wait_ms,
        } => {
            let l = tokio::task::spawn_blocking(move || {
                loadgen::kafka::fetch_latency(&brokers, &topic, samples, interval, fetch_wait_ms)
            })
            .await??;
            println!(
                "write to read, fetch.wait.max.ms={fetch_wait_ms}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.count
            );
        }
        Command::Consume {
            brokers,
            topic,
            events,
        } => {
            let rate = tokio::task::spawn_blocking(move || {
                loadgen::kafka::consume(&brokers, &topic, events, Duration::from_secs(1800))
            })
            .await??;
            println!("{rate:.0}");
        }
    }
    Ok(())
}
