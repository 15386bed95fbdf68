//! `command keys new` / `query keys new`: mints an API key, prints its secret once and the
//! keys-file line that holds only its hash.

use crate::auth;
use clap::Subcommand;
use std::io::Write;
use std::path::PathBuf;

/// Tools that run instead of the service.
#[derive(Debug, Clone, Subcommand)]
pub enum Tool {
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Mint a key: prints the secret (shown only now) and the line for --api-keys-file.
    New {
        /// The key's name, shown in logs and metrics (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        /// `write` (send events), `read` (read analytics), `write,read`, or `browser` (a
        /// publishable key for web pages: sends events only, see the README).
        #[arg(long)]
        scopes: String,
        /// Append the line to this keys file (created if missing, mode 0600).
        #[arg(long)]
        append: Option<PathBuf>,
    },
}

/// Runs `tool`, writing to stdout.
pub fn run(tool: Tool) -> anyhow::Result<()> {
    use anyhow::Context;
    let Tool::Keys {
        action:
            KeysAction::New {
                name,
                scopes,
                append,
            },
    } = tool;
    let minted = auth::mint(&name, &scopes).map_err(anyhow::Error::msg)?;
    if let Some(path) = &append {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{}", minted.line).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# API key {name:?} (scopes: {scopes}). The secret is shown only now; give it to the client:"
    )?;
    writeln!(out, "{}", minted.secret)?;
    match &append {
        Some(path) => writeln!(
            out,
            "# Appended to {}; send SIGHUP to the services to load it:",
            path.display()
        )?,
        None => writeln!(
            out,
            "# Append this line to the keys file (--api-keys-file), then send SIGHUP to the services:"
        )?,
    }
    writeln!(out, "{}", minted.line)?;
    Ok(())
}
