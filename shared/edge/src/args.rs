//! The flags of a public listener: keys, protected mode, rate limits, TLS, the admin
//! listener.

use clap::Args;
use std::num::NonZeroU32;
use std::path::PathBuf;

/// Access control and transport of a public HTTP API (command and query).
#[derive(Debug, Clone, Default, Args)]
pub struct EdgeArgs {
    /// File of API keys, one `<name> <scopes> <sha256-hex-of-secret>` per line; requests to
    /// the API must then send `Authorization: Bearer <secret>`. Re-read on SIGHUP.
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Serve without API keys on a non-loopback address, accepting that anyone who can reach
    /// it may use the API (without this, such a service refuses to start).
    #[arg(long, env = "INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Second address serving only /healthz, /readyz and /metrics (no keys, no TLS); when
    /// set, /metrics is no longer served on --listen.
    #[arg(long, env = "ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Requests per second allowed per API key (per client IP when there are no keys);
    /// beyond it, 429 with Retry-After. Off by default.
    #[arg(long, env = "RATE_LIMIT")]
    pub rate_limit: Option<NonZeroU32>,
    /// Requests a client may send at once before --rate-limit applies (default: the limit).
    #[arg(long, env = "RATE_BURST", requires = "rate_limit")]
    pub rate_burst: Option<NonZeroU32>,
    /// Requests per second allowed per browser (publishable) key and client address; beyond
    /// it, 429 with Retry-After. Off by default.
    #[arg(long, env = "RATE_LIMIT_BROWSER")]
    pub rate_limit_browser: Option<NonZeroU32>,
    /// PEM certificate chain: serve HTTPS (rustls) instead of HTTP. Re-read on SIGHUP.
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Origins whose web pages may call the API (CORS): a comma list of exact origins
    /// (`https://shop.example,https://www.shop.example`) or `*`. Empty: no CORS. When set, a
    /// write from a page of another origin is refused with 403.
    #[arg(long, env = "CORS_ALLOW_ORIGINS", default_value = "")]
    pub cors_allow_origins: String,
}
