//! HTTP serving shared by the four services: one accept loop with graceful drain, the
//! common endpoints (`/healthz`, `/readyz`, `/metrics`), request ids, HTTP metrics, and an
//! error type that maps validation to 400 and dependency failures to 503 without leaking
//! internals.
//!
//! Routing happens once, in [`dispatch`]: the common routes and the service's own
//! [`App::routes`] are one table of [`Route`]s; a path not in it is `404`, a method the route
//! does not answer is `405` with the route's `Allow`, and only then is the service's handler
//! called, with the route it matched. The route's path is the `route` label of the HTTP
//! metrics (any other path is `other`), so labels stay bounded.
//!
//! A request passes these stages in order, each able to answer on its own: the request-line
//! limit (`414`), the route table (`404`, `405`), the [`Surface`] of the listener (the admin
//! listener answers only the common routes), the [`crate::edge::Edge`] for routes with a
//! [`Scope`] (`401`, `403`, `429`), then the handler. Connections are limited before any of
//! it (`--max-connections`), and hyper cuts off clients that send their headers too slowly
//! (`--header-read-timeout`) or send more than [`MAX_HEAD_BYTES`] of them (`431`).
//!
//! Hand-written rather than axum/tower: one router of a handful of exact paths and a fixed
//! chain of stages, on the hottest path of the query service (`make bench` compares it with
//! a bare hyper server); every stage is a plain function call, with no boxing per request.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::Scope;
use crate::config::RuntimeArgs;
use crate::edge::Edge;
use crate::metrics::HttpMetrics;
use std::net::IpAddr;

pub type Body = Full<Bytes>;

pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Longest request target (path and query) answered; a longer one gets `414`.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

/// Most bytes of a request head (request line and headers); beyond it hyper answers `431`
/// and closes the connection.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    r
}

/// An empty response with the given status.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// Errors a handler answers with. Messages are written for the client: a validation reason,
/// or a generic dependency message (details go to the logs, never to the response).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("the API key lacks the {scope} scope")]
    Forbidden { scope: Scope },
    #[error("rate limit exceeded")]
    TooManyRequests { retry_after_secs: u32 },
    #[error("request target too long")]
    UriTooLong,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type, expected {0}")]
    UnsupportedMediaType(&'static str),
    #[error("{message}")]
    Unavailable {
        message: &'static str,
        retry_after_secs: u32,
    },
}

impl HttpError {
    pub fn into_response(self) -> Response<Body> {
        match self {
            HttpError::BadRequest(reason) => {
                text(StatusCode::BAD_REQUEST, format!("bad request: {reason}\n"))
            }
            HttpError::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
            HttpError::MethodNotAllowed { allow } => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                r
            }
            HttpError::Unauthorized => {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: missing or unknown API key; send Authorization: Bearer <key>\n",
                );
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            HttpError::Forbidden { scope } => text(
                StatusCode::FORBIDDEN,
                format!("forbidden: this API key lacks the {scope} scope\n"),
            ),
            HttpError::TooManyRequests { retry_after_secs } => {
                let mut r = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many requests: retry after {retry_after_secs} s\n"),
                );
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
                r
            }
            HttpError::PayloadTooLarge(reason) => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("payload too large: {reason}\n"),
            ),
            HttpError::UnsupportedMediaType(expected) => text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported media type: send Content-Type: {expected}\n"),
            ),
            HttpError::UriTooLong => text(
                StatusCode::URI_TOO_LONG,
                format!("request target longer than {MAX_TARGET_BYTES} bytes\n"),
            ),
            HttpError::Unavailable {
                message,
                retry_after_secs,
            } => {
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n"));
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
                r
            }
        }
    }
}

/// One route: an exact path and the methods answered there.
#[derive(Debug)]
pub struct Route {
    /// The exact path; also the `route` label of the HTTP metrics.
    pub path: &'static str,
    /// Methods answered; any other gets `405` with [`Route::allow`].
    pub methods: &'static [Method],
    /// The `Allow` header of a `405`.
    pub allow: &'static str,
    /// (method, status) of the busiest answers, whose metric series are resolved up front.
    pub hot: &'static [(&'static str, u16)],
    /// The API-key scope the route needs (checked by the [`Edge`]); `None`: always open.
    pub scope: Option<Scope>,
}

const GET_HEAD: &[Method] = &[Method::GET, Method::HEAD];

/// The routes every service answers.
pub const COMMON_ROUTES: &[Route] = &[
    Route {
        path: "/healthz",
        methods: GET_HEAD,
        allow: "GET, HEAD",
        hot: &[],
        scope: None,
    },
    Route {
        path: "/readyz",
        methods: GET_HEAD,
        allow: "GET, HEAD",
        hot: &[],
        scope: None,
    },
    Route {
        path: "/metrics",
        methods: GET_HEAD,
        allow: "GET, HEAD",
        hot: &[],
        scope: None,
    },
];

/// State of one dependency for `/readyz`.
pub struct Check {
    pub name: &'static str,
    pub result: Result<(), String>,
}

/// What each service plugs into [`serve`].
pub trait App: Send + Sync + 'static {
    /// The service's own routes, besides [`COMMON_ROUTES`].
    fn routes(&self) -> &'static [Route] {
        &[]
    }
    /// Handles a request to one of [`App::routes`], with a method the route answers.
    fn handle(
        &self,
        route: &'static Route,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<Body>, HttpError>> + Send {
        let _ = (route, req);
        async { Err(HttpError::NotFound) }
    }
    /// Checks each dependency; the service is ready when all pass.
    fn readiness(&self) -> impl Future<Output = Vec<Check>> + Send;
    /// Metrics registry rendered at `/metrics`.
    fn registry(&self) -> &prometheus::Registry;
    fn http_metrics(&self) -> &HttpMetrics;
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

fn request_id(req: &Request<Incoming>) -> HeaderValue {
    if let Some(v) = req.headers().get("x-request-id") {
        if !v.is_empty() && v.len() <= 128 {
            return v.clone();
        }
    }
    generated_id(process_nonce(), REQUEST_SEQ.fetch_add(1, Ordering::Relaxed))
}

/// `{nonce:08x}-{sequence:016x}`, written without the formatting machinery (hot path).
fn generated_id(nonce: u32, n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 25];
    for (i, b) in id[..8].iter_mut().enumerate() {
        *b = HEX[(nonce >> (28 - 4 * i) & 0xf) as usize];
    }
    id[8] = b'-';
    for (i, b) in id[9..].iter_mut().enumerate() {
        *b = HEX[(n >> (60 - 4 * i) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

fn process_nonce() -> u32 {
    use std::sync::OnceLock;
    static NONCE: OnceLock<u32> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.subsec_nanos() ^ std::process::id().rotate_left(16)) ^ (t.as_secs() as u32)
    })
}

/// What one listener serves.
#[derive(Clone)]
pub struct Surface {
    /// The service's own routes; off on the admin listener.
    pub app_routes: bool,
    /// `/metrics`; off on the public listener when an admin listener serves it.
    pub metrics: bool,
    /// Keys, rate limits and TLS for routes with a [`Scope`]; `None`: all open, plain HTTP.
    pub edge: Option<Arc<Edge>>,
}

impl Surface {
    /// Every route, open, plain HTTP: the processor's and materializer's only listener.
    pub fn internal() -> Self {
        Self {
            app_routes: true,
            metrics: true,
            edge: None,
        }
    }

    /// The public API behind `edge`; `/metrics` too unless an admin listener serves it.
    pub fn public(edge: Arc<Edge>, metrics: bool) -> Self {
        Self {
            app_routes: true,
            metrics,
            edge: Some(edge),
        }
    }

    /// `/healthz`, `/readyz` and `/metrics` only.
    pub fn admin() -> Self {
        Self {
            app_routes: false,
            metrics: true,
            edge: None,
        }
    }

    /// The route of `path` on this listener, common or the service's.
    fn find<A: App>(&self, app: &A, path: &str) -> Option<&'static Route> {
        let own: &'static [Route] = if self.app_routes { app.routes() } else { &[] };
        COMMON_ROUTES
            .iter()
            .filter(|r| self.metrics || r.path != "/metrics")
            .chain(own)
            .find(|r| r.path == path)
    }
}

async fn dispatch<A: App>(
    app: &A,
    surface: &Surface,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let found = surface.find(app, req.uri().path());
    let route = found.map_or("other", |r| r.path);
    let method = req.method().clone();
    let id = request_id(&req);
    let m = app.http_metrics();
    m.in_flight.inc();
    let start = Instant::now();
    // Only the id: method and route are in the metrics, and every field costs formatting.
    // Headers are never logged (they carry API keys).
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or("-"));
    let mut resp = async {
        let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        let r = match found {
            _ if target_len > MAX_TARGET_BYTES => HttpError::UriTooLong.into_response(),
            None => HttpError::NotFound.into_response(),
            Some(r) if !r.methods.contains(&method) => {
                HttpError::MethodNotAllowed { allow: r.allow }.into_response()
            }
            Some(Route {
                path: "/healthz", ..
            }) => text(StatusCode::OK, "ok\n"),
            Some(Route {
                path: "/readyz", ..
            }) => readiness_response(app).await,
            Some(Route {
                path: "/metrics", ..
            }) => metrics_response(app.registry()),
            Some(r) => match admit(surface, r, &req, peer) {
                Err(e) => e.into_response(),
                Ok(()) => match app.handle(r, req).await {
                    Ok(r) => r,
                    Err(e) => {
                        if matches!(e, HttpError::Unavailable { .. }) {
                            tracing::warn!(error = %e, "answering 503");
                        } else {
                            tracing::debug!(error = %e, "rejected request");
                        }
                        e.into_response()
                    }
                },
            },
        };
        tracing::debug!(%method, route, status = r.status().as_u16(), "answered");
        r
    }
    .instrument(span)
    .await;
    let status = resp.status();
    m.observe(route, &method, status, start.elapsed());
    m.in_flight.dec();
    resp.headers_mut().insert("x-request-id", id);
    resp
}

/// The edge's verdict for a scoped route; open routes and listeners without an edge pass.
fn admit(
    surface: &Surface,
    route: &Route,
    req: &Request<Incoming>,
    peer: IpAddr,
) -> Result<(), HttpError> {
    match (&surface.edge, route.scope) {
        (Some(edge), Some(scope)) => edge
            .admit(req.headers(), scope, peer)
            .map_err(HttpError::from),
        _ => Ok(()),
    }
}

async fn readiness_response<A: App>(app: &A) -> Response<Body> {
    let checks = app.readiness().await;
    let mut body = String::new();
    let mut ok = true;
    for c in &checks {
        match &c.result {
            Ok(()) => body.push_str(&format!("{}: ok\n", c.name)),
            Err(e) => {
                ok = false;
                body.push_str(&format!("{}: {e}\n", c.name));
            }
        }
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, body)
}

fn metrics_response(registry: &prometheus::Registry) -> Response<Body> {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        );
    }
    let mut r = Response::new(Full::new(Bytes::from(buf)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Serves `app` on `listener` as `surface` until `cancel` fires, then stops accepting and
/// gives in-flight requests up to `runtime.shutdown_timeout` to finish. At most
/// `runtime.max_connections` connections are served at once: each one beyond gets a `503`
/// with `Retry-After` to its first request and is closed, so that memory stays bounded
/// however many clients connect. A client that takes longer than
/// `runtime.header_read_timeout` to send a request head (or to finish the TLS handshake) is
/// disconnected, so slow clients cannot hold the connections.
pub async fn serve<A: App>(
    listener: TcpListener,
    app: Arc<A>,
    surface: Surface,
    cancel: CancellationToken,
    runtime: &RuntimeArgs,
) {
    let grace = runtime.shutdown_timeout;
    let head_timeout = runtime.header_read_timeout;
    let slots = Arc::new(Semaphore::new(runtime.max_connections as usize));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let mut refuse = hyper::server::conn::http1::Builder::new();
    refuse
        .keep_alive(false)
        .max_buf_size(16 * 1024)
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let surface = Arc::new(surface);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let tls = surface
            .edge
            .as_ref()
            .and_then(|e| e.tls().map(|t| t.acceptor()));
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            app.http_metrics().connections_refused.inc();
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(too_many_connections())
            });
            let (refuse, watcher) = (refuse.clone(), graceful.watcher());
            tokio::spawn(async move {
                match tls {
                    None => {
                        let _ = watcher
                            .watch(refuse.serve_connection(TokioIo::new(stream), svc))
                            .await;
                    }
                    Some(tls) => {
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(head_timeout, tls.accept(stream)).await
                        {
                            let _ = watcher
                                .watch(refuse.serve_connection(TokioIo::new(s), svc))
                                .await;
                        }
                    }
                }
            });
            continue;
        };
        let open = app.http_metrics().open_connections.clone();
        open.inc();
        let (app, surface) = (app.clone(), surface.clone());
        let peer = peer.ip();
        let svc = hyper::service::service_fn(move |req| {
            let (app, surface) = (app.clone(), surface.clone());
            async move { Ok::<_, std::convert::Infallible>(dispatch(&*app, &surface, peer, req).await) }
        });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), svc))
                        .await
                }
                Some(tls) => match tokio::time::timeout(head_timeout, tls.accept(stream)).await {
                    Ok(Ok(s)) => {
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(s), svc))
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown timeout: dropping open connections"),
    }
}

/// The answer on a connection beyond `--max-connections`.
fn too_many_connections() -> Response<Body> {
    let mut r = HttpError::Unavailable {
        message: "too many connections, retry later",
        retry_after_secs: 1,
    }
    .into_response();
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Binds `addr` (e.g. `127.0.0.1:0` in tests) with a clear error.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_nonce_and_sequence_in_hex() {
        assert_eq!(
            generated_id(0xdead_beef, 0x2a).to_str().unwrap(),
            format!("{:08x}-{:016x}", 0xdead_beefu32, 0x2a)
        );
        assert_eq!(
            generated_id(1, u64::MAX).to_str().unwrap(),
            "00000001-ffffffffffffffff"
        );
    }
}
