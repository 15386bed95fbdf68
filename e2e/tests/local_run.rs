//! `make run` itself, started and stopped as a user does, six times in a row.
//!
//! Each round starts the real `make run` (the debug binaries instead of a release build, a
//! data directory of its own and free ports instead of the standard ones) in a process group
//! of its own, as a terminal would, waits until the four services are ready, posts an event
//! and reads it back, then stops it: SIGINT to the whole group (Ctrl-C), SIGTERM to the whole
//! group, SIGTERM to `make` alone (`kill`), SIGHUP to the group (the terminal closed), or
//! `make stop` from elsewhere, one per round. The sixth round starts it as a script's
//! background job does, with SIGINT ignored on entry, and stops it with SIGINT to the group
//! (a script's or a supervisor's SIGINT): `run.sh` must stop the stack as for Ctrl-C. After
//! each round no port of the stack may be listening and no process it recorded may be alive.
//!
//! A last round starts `make run` while a PostgreSQL that is not this checkout's (an orphan
//! of an earlier run whose `.local/` was deleted) holds the port: it must refuse with one
//! clear line and leave nothing running. The broker's log must show no panic.

use anyhow::{bail, ensure, Context, Result};
use e2e::http::Client;
use e2e::{free_port, Proc};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 6;

/// The ports of one stack, by the environment variable `run.sh` reads.
struct Ports(Vec<(&'static str, u16)>);

impl Ports {
    fn new() -> Self {
        Self(
            [
                "FRONT_PORT",
                "KAFKA_PORT",
                "REDIS_PORT",
                "PG_PORT",
                "PROM_PORT",
                "COMMAND_PORT",
                "QUERY_PORT",
                "PROCESSOR_PORT",
                "MATERIALIZER_PORT",
            ]
            .into_iter()
            .map(|name| (name, free_port()))
            .collect(),
        )
    }

    fn get(&self, name: &str) -> u16 {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .expect("known port")
            .1
    }

    fn listening(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, p)| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
            .map(|(n, p)| format!("{n}={p}"))
            .collect()
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin_dir() -> PathBuf {
    std::env::var_os("ANALYTICS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug"))
}

/// How `make run` is started.
#[derive(Clone, Copy, PartialEq)]
enum Start {
    /// As from a terminal: the default action for the signals the rounds send, even when the
    /// tests themselves were started in the background of a script (which ignores SIGINT in
    /// what it starts) or under `nohup` (SIGHUP).
    Terminal,
    /// As a background job of a non-interactive shell (`make run &` in a script): SIGINT and
    /// SIGQUIT ignored on entry, which `make` keeps and passes on to `run.sh`. A shell cannot
    /// trap a signal ignored when it started, so `run.sh` must restore the default first.
    /// (`bash -c 'make run & wait'` would ignore the same two signals, but the shell left in
    /// `wait` dies of the SIGINT at once; here `make` is the child and the group leader.)
    ScriptJob,
}

/// `make run` in a new process group, its output appended to `log`, started as `start` says.
fn make_run(local: &Path, ports: &Ports, log: &Path, start: Start) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = match start {
        Start::Terminal => {
            let mut cmd = Command::new("env");
            cmd.args(["--default-signal=INT,TERM,HUP", "make", "run"]);
            cmd
        }
        Start::ScriptJob => {
            let mut cmd = Command::new("bash");
            cmd.args(["-c", "trap '' INT QUIT; exec make run"]);
            cmd
        }
    };
    cmd.current_dir(root())
        .env("ANALYTICS_LOCAL_DIR", local)
        .env("ANALYTICS_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    for (name, port) in &ports.0 {
        cmd.env(name, port.to_string());
    }
    cmd.spawn().context("starting make run")
}

fn kill(sig: &str, target: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), "--", target])
        .status();
}

/// A failed round: kills the group of `make run` (make, `run.sh`) and stops what it started
/// with `stop.sh`, so that a failure leaves nothing running.
fn abandon(pgid: u32, local: &Path) {
    kill("KILL", &format!("-{pgid}"));
    let _ = Command::new("bash")
        .arg(root().join("deploy/local/stop.sh"))
        .env("ANALYTICS_LOCAL_DIR", local)
        .status();
}

/// Is signal `sig` ignored by process `pid` (the SigIgn mask of `/proc/PID/status`, signal n
/// at bit n-1)?
fn ignores(pid: u32, sig: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let mask = s.lines().find_map(|l| l.strip_prefix("SigIgn:"))?.trim();
            u64::from_str_radix(mask, 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// Waits for `child` to exit, at most `within`.
fn wait_exit(child: &mut Child, within: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("make run did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The processes `run.sh` recorded: (name, pid).
fn recorded(local: &Path) -> Vec<(String, u32)> {
    std::fs::read_to_string(local.join("run.pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.parse().ok()?))
        })
        .collect()
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn wait_ready(port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut c) = Client::connect(&format!("127.0.0.1:{port}")).await {
            if let Ok(r) = c.request("GET", "/readyz", &[]).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("port {port} not ready within {within:?}")
}

/// One event in, the same event out, both through the front door (the pipeline works, not
/// only the processes).
async fn round_trip(ports: &Ports, user: &str) -> Result<()> {
    let ts = analytics_model::clock::now_ms();
    let front = format!("127.0.0.1:{}", ports.get("FRONT_PORT"));
    let mut c = Client::connect(&front).await?;
    let r = c
        .request(
            "POST",
            &format!("/analytics?timestamp={ts}&user={user}&click"),
            &[],
        )
        .await?;
    ensure!(r.status == 204, "POST answered {} {}", r.status, r.body);
    let mut q = Client::connect(&front).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = q
            .request("GET", &format!("/analytics?timestamp={ts}"), &[])
            .await?;
        if r.status == 200 && !r.body.contains("clicks,0\n") {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the click never showed: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_stops_everything_it_started() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("analytics-local-run-{}", free_port()));
    let local = dir.join("local");
    std::fs::create_dir_all(&local)?;
    if let Some((uid, gid)) = e2e::postgres_ids() {
        // PostgreSQL runs as `postgres` and keeps its data under the local directory.
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    let log = dir.join("make-run.log");
    eprintln!("local run: output in {}", log.display());
    let ports = Ports::new();

    for round in 0..ROUNDS {
        let start = if round == 5 {
            Start::ScriptJob
        } else {
            Start::Terminal
        };
        let mut make = make_run(&local, &ports, &log, start)?;
        let pgid = make.id();
        for name in [
            "COMMAND_PORT",
            "QUERY_PORT",
            "PROCESSOR_PORT",
            "MATERIALIZER_PORT",
        ] {
            if let Err(e) = wait_ready(ports.get(name), Duration::from_secs(240)).await {
                abandon(pgid, &local);
                bail!(
                    "round {round}: {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
        round_trip(&ports, &format!("round-{round}")).await?;
        let procs = recorded(&local);
        ensure!(procs.len() >= 8, "round {round}: run.pids lists {procs:?}");
        if start == Start::ScriptJob && !ignores(pgid, 2) {
            // Else this round would test a terminal's start a second time.
            abandon(pgid, &local);
            bail!("round {round}: make run was meant to start with SIGINT ignored, and does not");
        }
        let how = match round {
            0 => {
                kill("INT", &format!("-{pgid}"));
                "SIGINT to the process group (Ctrl-C)"
            }
            1 => {
                kill("TERM", &format!("-{pgid}"));
                "SIGTERM to the process group"
            }
            2 => {
                kill("TERM", &pgid.to_string());
                "SIGTERM to make"
            }
            3 => {
                kill("HUP", &format!("-{pgid}"));
                "SIGHUP to the process group (terminal closed)"
            }
            4 => {
                let st = Command::new("make")
                    .arg("stop")
                    .current_dir(root())
                    .env("ANALYTICS_LOCAL_DIR", &local)
                    .stdin(Stdio::null())
                    .output()?;
                ensure!(
                    st.status.success(),
                    "make stop failed: {}",
                    String::from_utf8_lossy(&st.stderr)
                );
                "make stop from another terminal"
            }
            _ => {
                kill("INT", &format!("-{pgid}"));
                "SIGINT to the group of a make run started as a script's job (SIGINT ignored)"
            }
        };
        // Impatient users press Ctrl-C again: a stop once begun must not be cut short.
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill("INT", &format!("-{pgid}"));
        let st = match wait_exit(&mut make, Duration::from_secs(120)) {
            Ok(st) => st,
            Err(e) => {
                abandon(pgid, &local);
                let _ = make.wait();
                bail!(
                    "round {round} ({how}): {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let left: Vec<_> = procs.iter().filter(|(_, pid)| alive(*pid)).collect();
        let listening = ports.listening();
        eprintln!("round {round}: {how}: make exited {st}");
        ensure!(
            left.is_empty() && listening.is_empty(),
            "round {round} ({how}): still alive {left:?}, still listening {listening:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    let broker_log = std::fs::read_to_string(local.join("logs/broker.log"))?;
    ensure!(
        !broker_log.contains("panicked"),
        "the broker panicked during normal starts and stops:\n{broker_log}"
    );

    // An orphaned PostgreSQL, not this checkout's, on the port: a clear refusal.
    let stray = dir.join("stray-pg");
    std::fs::create_dir_all(&stray)?;
    if let Some((uid, gid)) = e2e::postgres_ids() {
        std::os::unix::fs::chown(&stray, Some(uid), Some(gid))?;
    }
    e2e::stack::initdb(&stray.join("data"))?;
    let pg = e2e::stack::postgres_command(&stray.join("data"), ports.get("PG_PORT"), &stray)?;
    let mut stray_pg = Proc::spawn("stray-postgres", pg, &dir)?;
    e2e::wait_port(
        ports.get("PG_PORT"),
        Duration::from_secs(30),
        "stray postgres",
    )?;
    let before = std::fs::metadata(&log)?.len();
    let mut make = make_run(&local, &ports, &log, Start::Terminal)?;
    let st = wait_exit(&mut make, Duration::from_secs(120))?;
    let out = std::fs::read_to_string(&log)?;
    let out = &out[before as usize..];
    stray_pg.interrupt(Duration::from_secs(10));
    ensure!(
        !st.success(),
        "make run started beside a foreign PostgreSQL:\n{out}"
    );
    let refusal = format!("port {} (PostgreSQL) is held by", ports.get("PG_PORT"));
    ensure!(
        out.lines()
            .any(|l| l.contains(&refusal) && l.contains("stop it")),
        "no clear refusal:\n{out}"
    );
    let listening = ports.listening();
    ensure!(
        listening.is_empty(),
        "the refused run left {listening:?} listening"
    );
    if std::env::var_os("KEEP_E2E_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
