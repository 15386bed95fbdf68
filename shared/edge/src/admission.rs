//! The checks of a scoped request, in a fixed order: the key (`401` when missing or unknown,
//! `403` when it lacks the route's scope), then the rate limit of its client (`429` with
//! `Retry-After`); and what a `SIGHUP` reloads. [`Edge`] is the listener's
//! [`analytics_http::Gate`].

use crate::args::EdgeArgs;
use crate::auth::{KeyFile, KeyFileError};
use crate::ratelimit::{retry_after_secs, Client, Limiter};
use crate::tls::{Tls, TlsError};
use analytics_http::{Gate, HttpError, Scope};
use analytics_runtime::metrics::counter_vec;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use prometheus::{IntCounterVec, Registry};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Why the edge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Keys(#[from] KeyFileError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "refusing to serve {addr} without authentication: it is not a loopback address, so \
         anyone who can reach it could use the API. Either give --api-keys-file PATH \
         (env API_KEYS_FILE), or pass --insecure-no-auth (env INSECURE_NO_AUTH=true) to \
         accept that risk"
    )]
    Unprotected { addr: SocketAddr },
}

/// Why a request to a scoped route is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No key, or a key not in the file: `401`.
    Unauthenticated,
    /// A key without the route's scope: `403`.
    Forbidden(Scope),
    /// The client's bucket is empty: `429`.
    RateLimited { retry_after_secs: u32 },
}

impl Refusal {
    /// The `reason` label of `http_requests_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::RateLimited { .. } => "rate_limited",
        }
    }
}

impl From<Refusal> for HttpError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthenticated => HttpError::Unauthorized,
            Refusal::Forbidden(scope) => HttpError::Forbidden { scope },
            Refusal::RateLimited { retry_after_secs } => {
                HttpError::TooManyRequests { retry_after_secs }
            }
        }
    }
}

/// The keys file and its current contents.
struct Keys {
    path: PathBuf,
    current: RwLock<Arc<KeyFile>>,
}

impl Keys {
    fn current(&self) -> Arc<KeyFile> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Keys, rate limits and TLS of one service's public listener.
pub struct Edge {
    keys: Option<Keys>,
    limiter: Option<Limiter>,
    tls: Option<Tls>,
    insecure_no_auth: bool,
    refused: IntCounterVec,
    reloads: IntCounterVec,
}

impl Edge {
    /// Loads the keys file and the certificate named by `args`; registers the edge's metrics.
    pub fn new(args: &EdgeArgs, registry: &Registry) -> Result<Self, EdgeError> {
        let keys = match &args.api_keys_file {
            Some(path) => Some(Keys {
                current: RwLock::new(Arc::new(KeyFile::load(path)?)),
                path: path.clone(),
            }),
            None => None,
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
            _ => None,
        };
        let limiter = args
            .rate_limit
            .map(|n| Limiter::new(n, args.rate_burst.unwrap_or(n)));
        let refused = counter_vec(
            registry,
            "http_requests_refused_total",
            "Requests refused at the edge, by reason (unauthenticated, forbidden, \
             rate_limited) and key name (empty when there is none).",
            &["reason", "key"],
        );
        let reloads = counter_vec(
            registry,
            "config_reloads_total",
            "Reloads on SIGHUP, by what was read (api_keys, tls) and result (ok, error).",
            &["what", "result"],
        );
        Ok(Self {
            keys,
            limiter,
            tls,
            insecure_no_auth: args.insecure_no_auth,
            refused,
            reloads,
        })
    }

    /// Protected mode: `Err` when `addr` is not loopback and no keys protect it.
    pub fn protect(&self, addr: SocketAddr) -> Result<(), EdgeError> {
        if self.keys.is_none() && !self.insecure_no_auth && !addr.ip().is_loopback() {
            return Err(EdgeError::Unprotected { addr });
        }
        Ok(())
    }

    /// Admits a request to a route of `scope` from `peer`, or says why not.
    pub fn check(&self, headers: &HeaderMap, scope: Scope, peer: IpAddr) -> Result<(), Refusal> {
        let client = match &self.keys {
            None => Client::from_addr(peer),
            Some(keys) => {
                let file = keys.current();
                let Some(key) = bearer(headers).and_then(|s| file.verify(s)) else {
                    return Err(self.refuse(Refusal::Unauthenticated, ""));
                };
                if !key.allows(scope) {
                    return Err(self.refuse(Refusal::Forbidden(scope), &key.name));
                }
                Client::Key(key.name.clone())
            }
        };
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let label = match &client {
            Client::Key(name) => name.clone(),
            _ => Arc::from(""),
        };
        limiter.check(client).map_err(|wait| {
            self.refuse(
                Refusal::RateLimited {
                    retry_after_secs: retry_after_secs(wait),
                },
                &label,
            )
        })
    }

    fn refuse(&self, r: Refusal, key: &str) -> Refusal {
        self.refused.with_label_values(&[r.reason(), key]).inc();
        r
    }

    /// Reads the keys file and the certificate again; what fails keeps its previous state.
    pub fn reload(&self) {
        if let Some(keys) = &self.keys {
            match KeyFile::load(&keys.path) {
                Ok(file) => {
                    tracing::info!(keys = file.len(), "API keys reloaded");
                    *keys.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(file);
                    self.reloads.with_label_values(&["api_keys", "ok"]).inc();
                }
                Err(e) => {
                    tracing::error!(error = %e, "API keys not reloaded: keeping the previous keys");
                    self.reloads.with_label_values(&["api_keys", "error"]).inc();
                }
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => {
                    tracing::info!("TLS certificate reloaded");
                    self.reloads.with_label_values(&["tls", "ok"]).inc();
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded: keeping the previous one");
                    self.reloads.with_label_values(&["tls", "error"]).inc();
                }
            }
        }
    }

    /// Forgets idle rate-limit clients every few seconds until `cancel`.
    pub(crate) async fn housekeeping(self: Arc<Self>, cancel: CancellationToken) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => limiter.housekeeping(),
            }
        }
    }

    /// Calls [`Edge::reload`] on every SIGHUP until `cancel`.
    pub(crate) async fn reload_on_sighup(self: Arc<Self>, cancel: CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: keys reload only on restart");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some(()) = hup.recv() => {
                    tracing::info!("SIGHUP: reloading API keys and TLS certificate");
                    self.reload();
                }
            }
        }
    }
}

/// The secret of `Authorization: Bearer <secret>` (scheme case-insensitive, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(AUTHORIZATION)?.as_bytes();
    if v.len() < 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let secret = v[7..].trim_ascii();
    (!secret.is_empty()).then_some(secret)
}

impl Gate for Edge {
    fn admit(&self, headers: &HeaderMap, scope: Scope, peer: IpAddr) -> Result<(), HttpError> {
        self.check(headers, scope, peer).map_err(HttpError::from)
    }

    fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.as_ref().map(Tls::acceptor)
    }
}

#[cfg(test)]
mod tests;
