//! The HTTP server of every service: one accept loop with graceful drain, routes bound to
//! their handlers, the common endpoints (`/healthz`, `/readyz`, `/metrics`), request ids,
//! HTTP metrics, and an error type that maps validation to 400 and dependency failures to
//! 503 without leaking internals.
//!
//! Routing happens once, in `dispatch`: the common routes and the service's own
//! [`App::ROUTES`] are one table of [`Route`]s, each carrying its [`Handler`]; a path not in
//! it is `404`, a method the route does not answer is `405` with an `Allow` made from the
//! route's methods, and only then is the route's handler called. So a route cannot exist
//! without a handler, and no handler matches paths a second time. The route's path is the
//! `route` label of the HTTP metrics (any other path is `other`), so labels stay bounded.
//!
//! A request passes these stages in order, each able to answer on its own: the request-line
//! limit (`414`), the route table (`404`, `405`), the [`Surface`] of the listener (the admin
//! listener answers only the common routes), its [`Gate`] for routes with a [`Scope`] (keys
//! and rate limits: `401`, `403`, `429`; the `analytics-edge` crate implements it), then the
//! handler: a [`Handler::Read`] reads what the request asks for, and only then, with the
//! request dropped, [`App::answer`] answers it. Connections are limited before any of it
//! (`--max-connections`); a connection that sends no complete head for
//! `--header-read-timeout` is closed, and hyper answers `431` to more than
//! [`MAX_HEAD_BYTES`] of head.
//!
//! | module | job |
//! | --- | --- |
//! | this one | [`Route`], [`Handler`], [`App`], [`Surface`], [`Gate`], response helpers |
//! | `dispatch` | the request stages, the common endpoints |
//! | `error` | [`HttpError`] and its responses |
//! | `metrics` | [`HttpMetrics`] |
//! | `request_id` | `X-Request-Id` |
//! | `server` | [`serve`]: the accept loop, limits, TLS, graceful drain |
//! | `conn` | what the GET path needed beyond hyper, measured: [`carve`], the head deadline, the connection guard |
//!
//! Hand-written rather than axum/tower: one router of a handful of exact paths and a fixed
//! chain of stages, on the hottest path of the query service (`make bench` compares it with
//! a bare hyper server); every stage is a plain function call, with no boxing per request.
//! What the stages cost against that server, and what was cut, is in `conn`'s doc.

mod conn;
pub mod cors;
mod dispatch;
#[cfg(test)]
mod drain_tests;
mod error;
mod metrics;
mod request_id;
mod server;

pub use conn::carve;
pub use error::HttpError;
pub use metrics::HttpMetrics;
pub use server::{bind, serve};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

pub type Body = Full<Bytes>;

/// What a handler answers: a response, or an error rendered by [`HttpError`].
pub type Reply = Result<Response<Body>, HttpError>;

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

/// What an API key must allow for a route ([`Gate::admit`] checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `POST` events (command).
    Write,
    /// `GET` analytics (query).
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What answers a route.
pub enum Handler<A: App> {
    /// `/healthz`: `ok`.
    Health,
    /// `/readyz`: the service's [`App::readiness`].
    Ready,
    /// `/metrics`: the service's registry.
    Metrics,
    /// A fixed answer (the OpenAPI document, the page's assets).
    Fixed(fn() -> Response<Body>),
    /// The service reads the request before anything is awaited (a bad request is answered
    /// from here), and [`App::answer`] answers what it read.
    Read(fn(&A, Request<Incoming>) -> Result<A::Asked, HttpError>),
}

/// One route: an exact path, the methods answered there, and what answers them.
pub struct Route<A: App> {
    /// The exact path; also the `route` label of the HTTP metrics.
    pub path: &'static str,
    /// Methods answered; any other gets `405` with these in `Allow`.
    pub methods: &'static [Method],
    /// (method, status) of the busiest answers, whose metric series are resolved up front.
    pub hot: &'static [(&'static str, u16)],
    /// The API-key scope the route needs (checked by the listener's [`Gate`]); `None`:
    /// always open.
    pub scope: Option<Scope>,
    pub handler: Handler<A>,
}

/// `GET` and `HEAD`, the methods of every read-only route.
pub const GET_HEAD: &[Method] = &[Method::GET, Method::HEAD];

impl<A: App> Route<A> {
    /// The routes every service answers.
    pub const COMMON: &'static [Route<A>] = &[
        Route::open("/healthz", Handler::Health),
        Route::open("/readyz", Handler::Ready),
        Route::open("/metrics", Handler::Metrics),
    ];

    /// A `GET`/`HEAD` route open to everyone, with no hot series.
    pub const fn open(path: &'static str, handler: Handler<A>) -> Self {
        Route {
            path,
            methods: GET_HEAD,
            hot: &[],
            scope: None,
            handler,
        }
    }

    /// Every route of `A` on a listener that answers all of them.
    pub fn all() -> impl Iterator<Item = &'static Route<A>> {
        Self::COMMON.iter().chain(A::ROUTES)
    }
}

/// Why a consumer is not ready before its group has assigned it partitions.
pub const WAITING_FOR_ASSIGNMENT: &str = "waiting for the first partition assignment";

/// State of one dependency for `/readyz`.
pub struct Check {
    pub name: &'static str,
    pub result: Result<(), String>,
}

impl Check {
    /// The outcome of a probe of `name` (a ping, a query): its error, if any, is the reason.
    pub fn new<E: std::fmt::Display>(name: &'static str, probe: Result<(), E>) -> Self {
        Self {
            name,
            result: probe.map_err(|e| e.to_string()),
        }
    }

    /// Passes when `ok`; otherwise fails with `waiting`.
    pub fn when(name: &'static str, ok: bool, waiting: impl Into<String>) -> Self {
        Self {
            name,
            result: if ok { Ok(()) } else { Err(waiting.into()) },
        }
    }
}

/// What each service plugs into [`serve`].
pub trait App: Sized + Send + Sync + 'static {
    /// The service's own routes, besides [`Route::COMMON`].
    const ROUTES: &'static [Route<Self>] = &[];
    /// What a request to one of the service's routes asks for, read by its
    /// [`Handler::Read`]. It must own what it holds (a body is fine, a header or the URI is
    /// not): the request's head is hyper's read buffer, which hyper can reuse for the next
    /// request only once nothing points into it (the `dispatch` module says more).
    type Asked: Send + 'static;
    /// Answers what a [`Handler::Read`] read.
    fn answer(&self, asked: Self::Asked) -> impl Future<Output = Reply> + Send {
        drop(asked);
        async { Err(HttpError::NotFound) }
    }
    /// Checks each dependency; the service is ready when all pass.
    fn readiness(&self) -> impl Future<Output = Vec<Check>> + Send;
    /// The HTTP families the server updates; their registry (the service's) is rendered at
    /// `/metrics`.
    fn metrics(&self) -> &HttpMetrics;
}

/// What a [`Gate`] sees of a request to a route with a scope.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string: a publishable key may come as its `key` parameter.
    pub query: Option<&'a str>,
    pub scope: Scope,
    pub peer: IpAddr,
    /// The request's `Origin` as `--cors-allow-origins` judges it.
    pub origin: OriginCheck,
}

/// The request's `Origin` against the listener's CORS origins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginCheck {
    /// The listener has no CORS origins.
    Unchecked,
    /// A listed origin.
    Listed,
    /// No `Origin`, or one not listed.
    NotListed,
}

/// The checks a public listener makes before a scoped route's handler (keys, rate limits),
/// and its TLS; implemented by the `analytics-edge` crate.
pub trait Gate: Send + Sync + 'static {
    /// Admits a request to a route with a scope, or says why not (`401`, `403`, `429`).
    fn admit(&self, asked: &Admission<'_>) -> Result<(), HttpError>;
    /// The TLS acceptor of new connections, if the listener serves HTTPS.
    fn tls(&self) -> Option<TlsAcceptor>;
}

/// What accepts a TLS connection: rustls's acceptor with the `tls` feature (which the
/// `analytics-edge` crate enables for command and query).
#[cfg(feature = "tls")]
pub use tokio_rustls::TlsAcceptor;

/// Without the `tls` feature no listener serves HTTPS: there is no acceptor to give, so the
/// processor and the materializer build no TLS at all.
#[derive(Debug, Clone)]
#[cfg(not(feature = "tls"))]
pub enum TlsAcceptor {}

/// What one listener serves.
#[derive(Clone)]
pub struct Surface {
    /// The service's own routes; off on the admin listener.
    pub app_routes: bool,
    /// `/metrics`; off on the public listener when an admin listener serves it.
    pub metrics: bool,
    /// Keys, rate limits and TLS for routes with a [`Scope`]; `None`: all open, plain HTTP.
    pub gate: Option<Arc<dyn Gate>>,
    /// Origins whose pages may call routes with a [`Scope`] ([`cors`]); `None`: no CORS.
    pub cors: Option<Arc<cors::Cors>>,
}

impl Surface {
    /// Every route, open, plain HTTP: the processor's and materializer's only listener.
    pub fn internal() -> Self {
        Self {
            app_routes: true,
            metrics: true,
            gate: None,
            cors: None,
        }
    }

    /// The public API behind `gate` and `cors`; `/metrics` too unless an admin listener
    /// serves it.
    pub fn public(gate: Arc<dyn Gate>, metrics: bool, cors: Option<cors::Cors>) -> Self {
        Self {
            app_routes: true,
            metrics,
            gate: Some(gate),
            cors: cors.map(Arc::new),
        }
    }

    /// `/healthz`, `/readyz` and `/metrics` only.
    pub fn admin() -> Self {
        Self {
            app_routes: false,
            metrics: true,
            gate: None,
            cors: None,
        }
    }

    /// The route of `path` on this listener, the service's or common (the service's first:
    /// the busiest path is compared first).
    fn find<A: App>(&self, path: &str) -> Option<&'static Route<A>> {
        let own: &'static [Route<A>] = if self.app_routes { A::ROUTES } else { &[] };
        own.iter()
            .chain(
                Route::<A>::COMMON
                    .iter()
                    .filter(|r| self.metrics || !matches!(r.handler, Handler::Metrics)),
            )
            .find(|r| r.path == path)
    }
}
