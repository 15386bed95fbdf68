//! Child processes for the tests: spawned with their output in a log file, killed on drop;
//! free ports and waiting for one to listen.

use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Resident memory of process `pid` from `/proc`, if it is running.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A child process killed on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        cmd.stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null());
        // A process group of its own, so that killing it also kills what it started (nginx's
        // workers would otherwise outlive their master, orphaned, after every test).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Resident memory from `/proc`, if the process is running.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid())
    }

    /// Is the process still running (not exited, not killed)?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGHUP (command and query: reload keys and certificate).
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit; its exit code, if it exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGSTOP (freeze) or SIGCONT (resume).
    pub fn freeze(&self, frozen: bool) {
        self.signal(if frozen { "STOP" } else { "CONT" });
    }

    /// SIGINT (PostgreSQL: fast shutdown), then wait up to `grace` before SIGKILL.
    pub fn interrupt(&mut self, grace: Duration) {
        self.signal("INT");
        let deadline = Instant::now() + grace;
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return;
            }
            if Instant::now() > deadline {
                self.kill9();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL to its process group (it and whatever it started), and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Only while the child is not reaped: until then its pid, which is the group's
            // id, cannot be given to another process (this machine's pids wrap at 32 768).
            if let Ok(None) = c.try_wait() {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", c.id())])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL. Returns the exit code if it exited.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        self.signal("TERM");
        let deadline = Instant::now() + grace;
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                self.kill9();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The last `n` lines of the process's output, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` free TCP ports on 127.0.0.1, each bound then released, and never one this process was
/// given before: a port is only taken by its server some time after it is chosen, and the
/// kernel may offer a released port again meanwhile (a stack whose Redis port equalled its
/// relay's once had Redis fail to bind, and the services talking to the relay instead).
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    // Held until all are chosen, so that the kernel cannot offer one of them twice.
    let mut held = Vec::new();
    std::array::from_fn(|_| loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("a bound address").port();
        held.push(l);
        if !given.contains(&port) {
            given.push(port);
            break port;
        }
    })
}

pub fn wait_port(port: u16, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on port {port} within {timeout:?}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_never_given_twice() {
        let first = super::free_ports::<32>();
        let mut all: Vec<u16> = first.into_iter().chain(super::free_ports::<32>()).collect();
        all.push(super::free_port());
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 65);
    }
}
