//! The front door in tests: `deploy/nginx/nginx.conf.template` rendered for a stack's
//! services, and nginx (from Debian) running it.

use crate::process::{free_port, wait_port, Proc};
use crate::service::Service;
use crate::stack::{tool, Stack};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

impl Stack {
    /// Renders `deploy/nginx/nginx.conf.template` in `dir` for a front door on `port` in
    /// front of `command` and `query` instances (addresses); returns the config file's path.
    pub fn front_door_config(
        dir: &Path,
        port: u16,
        command: &[String],
        query: &[String],
    ) -> Result<PathBuf> {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/nginx.conf.template"),
        )?;
        let prefix = dir.join(format!("nginx-{port}"));
        std::fs::create_dir_all(&prefix)?;
        let servers = |addrs: &[String]| -> String {
            addrs.iter().map(|a| format!("server {a}; ")).collect()
        };
        let conf = template
            .replace("@PREFIX@", prefix.to_str().context("utf-8 path")?)
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@COMMAND@", &servers(command))
            .replace("@QUERY@", &servers(query));
        let path = prefix.join("nginx.conf");
        std::fs::write(&path, conf)?;
        Ok(path)
    }

    /// `nginx` with the prefix and error log of a config from [`Stack::front_door_config`].
    pub fn nginx_command(config: &Path) -> Result<Command> {
        let bin = tool("NGINX_BIN", &[PathBuf::from("/usr/sbin/nginx")])?;
        let prefix = config.parent().context("config in a directory")?;
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(config);
        Ok(cmd)
    }

    /// Starts the front door on a free port in front of `command` and `query`.
    pub fn front_door(&self, command: &[String], query: &[String]) -> Result<Service> {
        let port = free_port();
        let config = Self::front_door_config(&self.dir, port, command, query)?;
        let cmd = Self::nginx_command(&config)?;
        let proc = Proc::spawn(&format!("nginx-{port}"), cmd, &self.dir)?;
        wait_port(port, Duration::from_secs(10), "nginx")?;
        Ok(Service { port, proc })
    }
}
