//! The checks of a scoped request, in a fixed order: the key (`401` when missing or unknown,
//! `403` when it lacks the route's scope), then the rate limit of its client (`429` with
//! `Retry-After`); and what a `SIGHUP` reloads. [`Edge`] is the listener's
//! [`analytics_http::Gate`].
//!
//! A key is read from `Authorization: Bearer`; a **browser** (publishable) key may also come
//! as the `key` query parameter, because `navigator.sendBeacon` cannot set headers. A browser
//! key only writes, is refused (`403`) from a page whose origin `--cors-allow-origins` does
//! not list when that flag is set, and is limited by `--rate-limit-browser` per key *and*
//! client address (one page's visitors do not share one bucket). Any other key given as
//! `key` is refused with `403`: it would end up in access logs and browser histories.
//! Neither the services nor the front door ever log a query string with a `key` in it.

use crate::args::EdgeArgs;
use crate::auth::{KeyFile, KeyFileError};
use crate::ratelimit::{retry_after_secs, Client, Limiter};
use crate::tls::{Tls, TlsError};
use analytics_http::{Admission, Gate, HttpError, OriginCheck, Scope};
use analytics_runtime::metrics::counter_vec;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use prometheus::{IntCounterVec, Registry};
use std::net::SocketAddr;
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
    /// A browser key from a page of an origin not listed (CORS configured): `403`.
    BrowserOrigin,
    /// A key that is not a browser key, given as the `key` query parameter: `403`.
    KeyInQuery,
}

impl Refusal {
    /// The `reason` label of `http_requests_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::BrowserOrigin => "origin_not_listed",
            Refusal::KeyInQuery => "key_in_query",
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
            Refusal::BrowserOrigin => HttpError::KeyMisused(
                "a browser key is accepted only from a page of an origin listed in --cors-allow-origins",
            ),
            Refusal::KeyInQuery => HttpError::KeyMisused(
                "only a browser key may be sent as the 'key' query parameter; send this key as Authorization: Bearer <key>",
            ),
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
    /// `--rate-limit-browser`: browser keys, per key and client address.
    browser_limiter: Option<Limiter>,
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
        let browser_limiter = args.rate_limit_browser.map(|n| Limiter::new(n, n));
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
            browser_limiter,
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

    /// Admits a request to a scoped route, or says why not.
    pub fn check(&self, asked: &Admission<'_>) -> Result<(), Refusal> {
        let client = match &self.keys {
            None => Client::from_addr(asked.peer),
            Some(keys) => self.key_client(&keys.current(), asked)?,
        };
        let (limiter, label) = match &client {
            Client::Browser(name, _) => (&self.browser_limiter, name.clone()),
            Client::Key(name) => (&self.limiter, name.clone()),
            _ => (&self.limiter, Arc::from("")),
        };
        let Some(limiter) = limiter else {
            return Ok(());
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

    /// The rate-limit client of the request's key, once the key is known and may be used
    /// here (module doc).
    fn key_client(&self, file: &KeyFile, asked: &Admission<'_>) -> Result<Client, Refusal> {
        let (secret, in_query) = match bearer(asked.headers) {
            Some(secret) => (Some(secret), false),
            None => (key_param(asked.query), true),
        };
        let Some(key) = secret.and_then(|s| file.verify(s)) else {
            return Err(self.refuse(Refusal::Unauthenticated, ""));
        };
        if !key.allows(asked.scope) {
            return Err(self.refuse(Refusal::Forbidden(asked.scope), &key.name));
        }
        if key.is_browser() {
            if asked.origin == OriginCheck::NotListed {
                return Err(self.refuse(Refusal::BrowserOrigin, &key.name));
            }
            return Ok(Client::browser(key.name.clone(), asked.peer));
        }
        if in_query {
            return Err(self.refuse(Refusal::KeyInQuery, &key.name));
        }
        Ok(Client::Key(key.name.clone()))
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

/// The value of the query's `key` parameter, as sent (a key is `ak_` and hex digits: an
/// escaped one matches no key). The name is matched as sent too, like the front door's log
/// filter, which hides any query with a `key=` in it.
fn key_param(query: Option<&str>) -> Option<&[u8]> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .filter(|v| !v.is_empty())
        .map(str::as_bytes)
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
    fn admit(&self, asked: &Admission<'_>) -> Result<(), HttpError> {
        self.check(asked).map_err(HttpError::from)
    }

    fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.as_ref().map(Tls::acceptor)
    }
}

#[cfg(test)]
mod tests;
