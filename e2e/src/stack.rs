//! The servers of one test: the broker (nisshi), `redis-server` and PostgreSQL on free ports
//! with temporary data, and the services started against them.

pub use crate::postgres::{as_postgres, initdb, pg_bindir, postgres_command, postgres_ids};
use crate::process::{free_port, free_ports, wait_port, Proc};
use crate::relay;
use crate::service::{Flags, Service, BROKER_REBALANCE_DELAY, QUERY_ARGS};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cache of installed tools (`~/.cache/hourly-analytics`, or `ANALYTICS_CACHE_DIR`).
pub fn home_cache() -> PathBuf {
    std::env::var_os("ANALYTICS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/hourly-analytics")
        })
}

/// The tool named by `env`, or the first of `candidates` that exists.
pub fn tool(env: &str, candidates: &[PathBuf]) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .with_context(|| {
            format!(
                "{env} not set and none of {candidates:?} exists: run deploy/local/install-deps.sh"
            )
        })
}

/// The broker version `deploy/local/install-deps.sh` installs (its default location).
const BROKER_DEFAULT: &str = "nisshi-0.8.1/bin/nisshi";

/// How a [`Stack`] runs its broker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Clients reach the broker through a [`relay::Relay`], so that [`Stack::cut_broker`] can
    /// take it off the network and bring it back.
    pub relayed: bool,
    /// The broker keeps its log in SQLite (as `make run` does) instead of memory, so that it
    /// can be stopped and started again with its data.
    pub persistent_broker: bool,
}

/// Broker, Redis and PostgreSQL for one test.
pub struct Stack {
    pub dir: PathBuf,
    /// The port clients use for the broker (the relay's, when there is one).
    pub kafka_port: u16,
    /// The port the broker itself listens on.
    broker_port: u16,
    pub redis_port: u16,
    pub pg_port: u16,
    broker: Option<Proc>,
    persistent_broker: bool,
    relay: Option<relay::Relay>,
    redis: Option<Proc>,
    postgres: Option<Proc>,
    bin_dir: PathBuf,
}

impl Stack {
    pub fn start() -> Result<Self> {
        Self::start_with(Options::default())
    }

    /// Like [`Stack::start`], but clients reach the broker through a [`relay::Relay`], so
    /// that [`Stack::cut_broker`] can take it off the network and bring it back.
    pub fn start_relayed() -> Result<Self> {
        Self::start_with(Options {
            relayed: true,
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> Result<Self> {
        let relayed = options.relayed;
        let dir = std::env::temp_dir().join(format!(
            "analytics-e2e-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir)?;
        let bin_dir = std::env::var_os("ANALYTICS_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
        let [kafka_port, relayed_broker_port, redis_port, pg_port] = free_ports();
        let mut s = Self {
            dir,
            kafka_port,
            broker_port: if relayed {
                relayed_broker_port
            } else {
                kafka_port
            },
            redis_port,
            pg_port,
            broker: None,
            persistent_broker: options.persistent_broker,
            relay: None,
            redis: None,
            postgres: None,
            bin_dir,
        };
        s.start_broker()?;
        if relayed {
            s.relay = Some(relay::Relay::start(s.kafka_port, s.broker_port)?);
        }
        s.start_redis()?;
        s.start_postgres()?;
        Ok(s)
    }

    /// Starts the broker on the stack's broker port (again, after [`Stack::stop_broker`]:
    /// with its data when the stack was started with [`Options::persistent_broker`]).
    pub fn start_broker(&mut self) -> Result<()> {
        let bin = tool("BROKER_BIN", &[home_cache().join(BROKER_DEFAULT)])?;
        let listen = format!("tcp://127.0.0.1:{}", self.broker_port);
        // With a relay, the broker advertises the relay, so no client bypasses it.
        let advertised = format!("tcp://127.0.0.1:{}", self.kafka_port);
        let mut cmd = Command::new(bin);
        cmd.args([
            "broker",
            "--listener-url",
            &listen,
            "--advertised-listener-url",
            &advertised,
            // The default (3 s) holds every new group that long; tests start and stop
            // consumers every few seconds.
            "--group-initial-rebalance-delay",
            BROKER_REBALANCE_DELAY,
        ]);
        if self.persistent_broker {
            // The SQLite path is relative to the broker's working directory.
            let data = self.dir.join("broker");
            std::fs::create_dir_all(&data)?;
            cmd.current_dir(&data)
                .args(["--storage-engine", "sqlite://broker.db"]);
        } else {
            cmd.args(["--storage-engine", "memory://nisshi/"]);
        }
        self.broker = Some(Proc::spawn("broker", cmd, &self.dir)?);
        wait_port(self.broker_port, Duration::from_secs(30), "broker")
    }

    /// Stops the broker process: SIGTERM (a clean stop) or SIGKILL (a crash). Clients see
    /// every connection closed and new ones refused until [`Stack::start_broker`].
    pub fn stop_broker(&mut self, crash: bool) {
        if let Some(mut b) = self.broker.take() {
            if crash {
                b.kill9();
            } else {
                b.terminate(Duration::from_secs(10));
            }
        }
    }

    /// Takes the broker off the network: connections to it are cut and new ones refused,
    /// as when a broker stops. The broker keeps its data. Needs [`Stack::start_relayed`].
    pub fn cut_broker(&self) -> Result<()> {
        self.relay
            .as_ref()
            .context("cut_broker needs Stack::start_relayed")?
            .cut();
        Ok(())
    }

    /// Puts the broker back on the network after [`Stack::cut_broker`].
    pub fn restore_broker(&self) -> Result<()> {
        self.relay
            .as_ref()
            .context("restore_broker needs Stack::start_relayed")?
            .restore()
    }

    /// Stops Redis (SIGKILL); [`Stack::start_redis`] brings it back empty on the same port.
    pub fn stop_redis(&mut self) {
        drop(self.redis.take());
    }

    pub fn start_redis(&mut self) -> Result<()> {
        let bin = tool("REDIS_SERVER", &[PathBuf::from("/usr/bin/redis-server")])?;
        // The password sits in a config file, as in `make run`, not on the command line.
        let conf = self.dir.join("redis.conf");
        std::fs::write(&conf, format!("requirepass {}\n", self.redis_password()))?;
        let mut cmd = Command::new(bin);
        cmd.arg(&conf)
            .args(["--port", &self.redis_port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir);
        self.redis = Some(Proc::spawn("redis", cmd, &self.dir)?);
        wait_port(self.redis_port, Duration::from_secs(10), "redis")
    }

    fn start_postgres(&mut self) -> Result<()> {
        let bin = pg_bindir()?;
        let data = self.dir.join("pg");
        std::fs::create_dir_all(&data)?;
        if let Some((uid, gid)) = postgres_ids() {
            Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&self.dir)
                .status()?;
        }
        initdb(&data.join("data"))?;
        self.start_postgres_server()?;
        // CREATE DATABASE, retried while the server finishes starting.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut psql = self.psql_command(&bin, "postgres");
            psql.args(["-c", "CREATE DATABASE analytics"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if psql.status()?.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!("cannot create the database");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The writer and read-only roles, from the file `make run` applies.
        let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/postgres/roles.sql");
        let out = self
            .psql_command(&bin, "analytics")
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(&roles)
            .output()?;
        if !out.status.success() {
            bail!(
                "applying {}: {}",
                roles.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts the PostgreSQL server on the stack's data directory and port.
    pub fn start_postgres_server(&mut self) -> Result<()> {
        let data = self.dir.join("pg");
        let mut cmd = postgres_command(&data.join("data"), self.pg_port, &data)?;
        cmd.args(["-c", "fsync=off"]);
        self.postgres = Some(Proc::spawn("postgres", cmd, &self.dir)?);
        wait_port(self.pg_port, Duration::from_secs(30), "postgres")
    }

    /// Stops PostgreSQL (fast shutdown); [`Stack::start_postgres_server`] brings it back.
    pub fn stop_postgres(&mut self) {
        if let Some(mut pg) = self.postgres.take() {
            pg.interrupt(Duration::from_secs(10));
        }
    }

    pub fn kafka_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    /// Creates a topic of `partitions` partitions on the broker (an error if it exists).
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", self.kafka_brokers())
                .create()?;
        let created = admin
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await?;
        if let Some(Err((topic, code))) = created.into_iter().next() {
            bail!("creating topic {topic}: {code}");
        }
        Ok(())
    }

    /// Redis's `requirepass` (every test stack's Redis has one, as `make run`'s does).
    pub fn redis_password(&self) -> String {
        format!("e2e-{}", self.redis_port)
    }

    pub fn redis_url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}/",
            self.redis_password(),
            self.redis_port
        )
    }

    /// The materializer's URL: role `analytics_writer`.
    pub fn postgres_url(&self) -> String {
        self.postgres_url_as("analytics_writer")
    }

    /// The query's URL: role `analytics_reader` (SELECT only).
    pub fn reader_url(&self) -> String {
        self.postgres_url_as("analytics_reader")
    }

    pub fn postgres_url_as(&self, role: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/analytics", self.pg_port)
    }

    /// Path of a workspace binary (in `ANALYTICS_BIN_DIR`, default `target/debug`).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Starts one of the four services on a free port with `extra` arguments.
    /// The query service with [`QUERY_ARGS`].
    pub fn query(&self) -> Result<Service> {
        self.service("query", QUERY_ARGS)
    }

    pub fn service(&self, name: &str, extra: &[&str]) -> Result<Service> {
        self.service_on(name, free_port(), extra)
    }

    /// Starts one of the four services on `port` (e.g. to restart it where clients expect it).
    pub fn service_on(&self, name: &str, port: u16, extra: &[&str]) -> Result<Service> {
        self.service_on_with(name, port, Flags::args(extra))
    }

    /// Like [`Stack::service`], with `flags.env` set over the stack's environment.
    pub fn service_with(&self, name: &str, flags: Flags<'_>) -> Result<Service> {
        self.service_on_with(name, free_port(), flags)
    }

    /// Like [`Stack::service_on`], with `flags.env` set over the stack's environment.
    pub fn service_on_with(&self, name: &str, port: u16, flags: Flags<'_>) -> Result<Service> {
        let mut cmd = self.service_command(name, &format!("127.0.0.1:{port}"), flags.args)?;
        cmd.envs(flags.env.iter().copied());
        let proc = Proc::spawn(&format!("{name}-{port}"), cmd, &self.dir)?;
        wait_port(port, Duration::from_secs(30), name)?;
        Ok(Service { port, proc })
    }

    /// The command line [`Stack::service_on`] runs (listening on `listen`), to change before
    /// spawning it.
    pub fn service_command(&self, name: &str, listen: &str, extra: &[&str]) -> Result<Command> {
        let bin = self.bin_dir.join(name);
        if !bin.exists() {
            bail!(
                "{} missing: build the workspace binaries first (cargo build --bins)",
                bin.display()
            );
        }
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(listen)
            .env("KAFKA_BROKERS", self.kafka_brokers())
            .env("REDIS_URL", self.redis_url())
            .env(
                "POSTGRES_URL",
                if name == "query" {
                    self.reader_url()
                } else {
                    self.postgres_url()
                },
            )
            .env("RUST_LOG", "info")
            .args(extra);
        Ok(cmd)
    }

    /// `psql` connected to database `db` of the stack's PostgreSQL.
    fn psql_command(&self, bin: &Path, db: &str) -> Command {
        let mut psql = Command::new(bin.join("psql"));
        psql.args(["-h", "127.0.0.1", "-p", &self.pg_port.to_string()])
            .args(["-U", "postgres", "-d", db]);
        psql
    }

    /// Runs SQL with psql against the test database; returns unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = self
            .psql_command(&pg_bindir()?, "analytics")
            .args(["-At", "-c", sql])
            .output()?;
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        drop(self.relay.take());
        drop(self.broker.take());
        drop(self.redis.take());
        if let Some(mut pg) = self.postgres.take() {
            pg.terminate(Duration::from_secs(5));
        }
        if std::env::var_os("KEEP_E2E_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
