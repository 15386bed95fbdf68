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
//! Hand-written rather than axum/tower: one router of a handful of exact paths, on the
//! hottest path of the query service (`make bench` compares it with a bare hyper server).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::RuntimeArgs;
use crate::metrics::HttpMetrics;

pub type Body = Full<Bytes>;

pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

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
}

const GET_HEAD: &[Method] = &[Method::GET, Method::HEAD];

/// The routes every service answers.
pub const COMMON_ROUTES: &[Route] = &[
    Route {
        path: "/healthz",
        methods: GET_HEAD,
        allow: "GET, HEAD",
        hot: &[],
    },
    Route {
        path: "/readyz",
        methods: GET_HEAD,
        allow: "GET, HEAD",
        hot: &[],
    },
    Route {
        path: "/metrics",
        methods: GET_HEAD,
        allow: "GET, HEAD",
        hot: &[],
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

/// The route of `path`, common or the service's.
fn find_route<A: App>(app: &A, path: &str) -> Option<&'static Route> {
    COMMON_ROUTES
        .iter()
        .chain(app.routes())
        .find(|r| r.path == path)
}

async fn dispatch<A: App>(app: &A, req: Request<Incoming>) -> Response<Body> {
    let found = find_route(app, req.uri().path());
    let route = found.map_or("other", |r| r.path);
    let method = req.method().clone();
    let id = request_id(&req);
    let m = app.http_metrics();
    m.in_flight.inc();
    let start = Instant::now();
    // Only the id: method and route are in the metrics, and every field costs formatting.
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or("-"));
    let mut resp = async {
        let r = match found {
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
            Some(r) => match app.handle(r, req).await {
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

/// Serves `app` on `listener` until `cancel` fires, then stops accepting and gives
/// in-flight requests up to `runtime.shutdown_timeout` to finish. At most
/// `runtime.max_connections` connections are served at once: each one beyond gets a `503`
/// with `Retry-After` to its first request and is closed, so that memory stays bounded
/// however many clients connect.
pub async fn serve<A: App>(
    listener: TcpListener,
    app: Arc<A>,
    cancel: CancellationToken,
    runtime: &RuntimeArgs,
) {
    let grace = runtime.shutdown_timeout;
    let slots = Arc::new(Semaphore::new(runtime.max_connections as usize));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).max_buf_size(64 * 1024);
    let mut refuse = hyper::server::conn::http1::Builder::new();
    refuse.keep_alive(false).max_buf_size(16 * 1024);
    loop {
        let (stream, _peer) = tokio::select! {
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            app.http_metrics().connections_refused.inc();
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(too_many_connections())
            });
            let conn = graceful.watch(refuse.serve_connection(TokioIo::new(stream), svc));
            tokio::spawn(conn);
            continue;
        };
        let open = app.http_metrics().open_connections.clone();
        open.inc();
        let app = app.clone();
        let svc = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(dispatch(&*app, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
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
