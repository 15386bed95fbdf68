//! HTTP serving shared by the four services: one accept loop with graceful drain, the
//! common endpoints (`/healthz`, `/readyz`, `/metrics`), request ids, HTTP metrics, and an
//! error type that maps validation to 400 and dependency failures to 503 without leaking
//! internals.
//!
//! Routing happens once, in `dispatch`: the common routes and the service's own
//! [`App::routes`] are one table of [`Route`]s; a path not in it is `404`, a method the route
//! does not answer is `405` with the route's `Allow`, and only then is the service's handler
//! called, with the route it matched. The route's path is the `route` label of the HTTP
//! metrics (any other path is `other`), so labels stay bounded.
//!
//! A request passes these stages in order, each able to answer on its own: the request-line
//! limit (`414`), the route table (`404`, `405`), the [`Surface`] of the listener (the admin
//! listener answers only the common routes), the [`crate::edge::Edge`] for routes with a
//! [`Scope`] (`401`, `403`, `429`), then the handler: [`App::read`] reads what the request
//! asks for, and only then, with the request dropped, [`App::answer`] answers it. Connections are limited before any of
//! it (`--max-connections`); a connection that sends no complete head for
//! `--header-read-timeout` is closed (`head_deadline`), and hyper answers `431` to more than
//! [`MAX_HEAD_BYTES`] of head.
//!
//! | module | job |
//! | --- | --- |
//! | this one | routes, [`App`], [`Surface`], response helpers |
//! | `carve` | small answers carved from a per-thread chunk ([`carve`]) |
//! | `dispatch` | the request stages, the common endpoints |
//! | `error` | [`HttpError`] and its responses |
//! | `guard` | a connection with its drain and idle watchers, polled only when they wake |
//! | `head_deadline` | `--header-read-timeout`, one watch per connection |
//! | `request_id` | `X-Request-Id` |
//! | `server` | [`serve`]: the accept loop, limits, TLS, graceful drain |
//!
//! Hand-written rather than axum/tower: one router of a handful of exact paths and a fixed
//! chain of stages, on the hottest path of the query service (`make bench` compares it with
//! a bare hyper server); every stage is a plain function call, with no boxing per request.
//!
//! What the stages cost, and a target left unmet: a GET of the query answered from its cache
//! executes some 2 800 user-space instructions more than a bare hyper server answering a
//! fixed body (about 10 000 against 7 300 in the release build, `make get-instructions`), and
//! `make bench` puts its throughput at about 0.94 of that server's, short of row 2's target
//! of 0.95 (docs/benchmarks.md). The difference is mostly what every request must get and the
//! bare server skips: an id and its header (which the load generator, on the same cores,
//! parses too), a count and a time in the metrics, the route and the edge's checks. What was
//! cut, and what was tried and measured without effect, is in docs/benchmarks-notes.md.

mod carve;
mod dispatch;
#[cfg(test)]
mod drain_tests;
mod error;
mod guard;
mod head_deadline;
mod request_id;
mod server;

pub use carve::carve;
pub use error::HttpError;
pub use server::{bind, serve};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use std::future::Future;
use std::sync::Arc;

use crate::auth::Scope;
use crate::edge::Edge;
use crate::metrics::HttpMetrics;

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
pub trait App: Send + Sync + 'static {
    /// The service's own routes, besides [`COMMON_ROUTES`].
    const ROUTES: &'static [Route] = &[];
    /// What a request to one of the service's routes asks for, read from its head by
    /// [`App::read`]. It must own what it holds (a body is fine, a header or the URI is not):
    /// the request's head is hyper's read buffer, which hyper can reuse for the next request
    /// only once nothing points into it (the `dispatch` module says more).
    type Asked: Send + 'static;
    /// Reads a request to one of the service's routes, with a method the route answers,
    /// before anything is awaited: a bad request is answered from here.
    fn read(
        &self,
        route: &'static Route,
        req: Request<Incoming>,
    ) -> Result<Self::Asked, HttpError> {
        let _ = (route, req);
        Err(HttpError::NotFound)
    }
    /// Answers what [`App::read`] read.
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
    fn find<A: App>(&self, path: &str) -> Option<&'static Route> {
        let own: &'static [Route] = if self.app_routes { A::ROUTES } else { &[] };
        COMMON_ROUTES
            .iter()
            .filter(|r| self.metrics || r.path != "/metrics")
            .chain(own)
            .find(|r| r.path == path)
    }
}
