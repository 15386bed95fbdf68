//! PostgreSQL for tests: finding its binaries, running them as the `postgres` user, initdb.

use crate::stack::tool;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn pg_bindir() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.reverse();
    tool("PG_BINDIR", &found)
}

/// uid/gid of the `postgres` user, when running as root (PostgreSQL refuses root).
pub fn postgres_ids() -> Option<(u32, u32)> {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().ok()?.stdout).ok()?;
    if uid.trim() != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().ok()?, f[3].parse().ok()?))
}

/// Makes `cmd` run as the `postgres` user when the tests run as root.
pub fn as_postgres(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = postgres_ids() {
        cmd.uid(uid).gid(gid);
    }
}

/// Initialises an empty PostgreSQL data directory (as the `postgres` user when root).
pub fn initdb(data: &Path) -> Result<()> {
    let mut init = Command::new(pg_bindir()?.join("initdb"));
    init.arg("-D")
        .arg(data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_postgres(&mut init);
    let st = init.status().context("running initdb")?;
    if !st.success() {
        bail!("initdb failed: {st}");
    }
    Ok(())
}

/// The PostgreSQL server on `data`, listening on 127.0.0.1:`port` with its Unix socket in
/// `socket_dir` (as the `postgres` user when root).
pub fn postgres_command(data: &Path, port: u16, socket_dir: &Path) -> Result<Command> {
    let mut cmd = Command::new(pg_bindir()?.join("postgres"));
    cmd.arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        .arg("-k")
        .arg(socket_dir)
        .args(["-c", "listen_addresses=127.0.0.1"]);
    as_postgres(&mut cmd);
    Ok(cmd)
}
