//! The stages a request passes, in two halves.
//!
//! [`begin`] runs when hyper hands the request over, before anything is awaited: the
//! request-line limit, the route table, the listener's [`Surface`], its gate, and the route's
//! [`Handler`]. It drops the request. [`finish`] is the request's future: the
//! service's [`App::answer`] (or the readiness probes), the metrics, the request id.
//!
//! Why two halves: hyper parses a head into slices of its read buffer, and between handing
//! the request over and polling its future it reads the socket again (to notice a client
//! that hangs up). A future that still holds the request then holds the buffer, so hyper
//! cannot reuse it and allocates a new one, for every request. Reading the request first
//! and dropping it lets hyper reuse one buffer per connection, as a bare hyper server does
//! (about a third of the query's extra instructions per GET, docs/benchmarks-notes.md).

use super::cors::{self, Verdict};
use super::request_id::{request_id, X_REQUEST_ID};
use super::{
    text, Admission, App, Body, Handler, HttpError, OriginCheck, Route, Surface, MAX_TARGET_BYTES,
};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::IntGauge;
use std::net::IpAddr;
use std::time::Instant;
use tracing::Instrument;

/// A request read from its head: all [`finish`] needs, none of it borrowed from the request.
pub(super) struct Begun<Asked> {
    route: &'static str,
    method: Method,
    id: HeaderValue,
    start: Instant,
    step: Step<Asked>,
    span: tracing::Span,
    /// The allowed origin whose CORS headers the answer gets ([`cors`]).
    origin: Option<HeaderValue>,
}

/// What is left to do.
enum Step<Asked> {
    /// Answered already (an error, a common endpoint). Boxed: the size of every request's
    /// future otherwise, for answers off the hot path.
    Answered(Box<Response<Body>>),
    /// `/readyz`: the probes are awaited.
    Readiness,
    /// The service's route: [`App::answer`].
    Asked(Asked),
}

/// The first half: reads `req` and drops it.
pub(super) fn begin<A: App>(
    app: &A,
    surface: &Surface,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Begun<A::Asked> {
    let start = Instant::now();
    let found = surface.find::<A>(req.uri().path());
    let route = found.map_or("other", |r| r.path);
    let method = req.method().clone();
    let id = request_id(&req);
    // A span per request only when debug logging is on: at info it cost some 7% of the query
    // service's CPU under GET load (created, its field formatted, entered on every poll,
    // closed), and even a disabled one about 1% (docs/benchmarks-notes.md), for log lines
    // that at info are the 503s, which name the id themselves. Only the id: method and route
    // are in the metrics. Headers are never logged (they carry API keys).
    let span = if tracing::level_enabled!(tracing::Level::DEBUG) {
        tracing::debug_span!("request", request_id = id.to_str().unwrap_or("-"))
    } else {
        tracing::Span::none()
    };
    let mut origin = None;
    let step = {
        let _entered = span.enter();
        let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        match found {
            _ if target_len > MAX_TARGET_BYTES => answered(HttpError::UriTooLong),
            None => answered(HttpError::NotFound),
            Some(r) => match cross_origin(surface, r, &req) {
                Verdict::Answer(response) => Step::Answered(Box::new(response)),
                Verdict::Refuse(e) => answered(e),
                Verdict::Pass(allowed) => {
                    origin = allowed;
                    routed(app, surface, r, req, peer)
                }
            },
        }
    };
    Begun {
        route,
        method,
        id,
        start,
        step,
        span,
        origin,
    }
}

/// The CORS verdict on a request to a route with a scope, when the listener has origins.
fn cross_origin<A: App>(surface: &Surface, route: &Route<A>, req: &Request<Incoming>) -> Verdict {
    match (&surface.cors, route.scope) {
        (Some(allowed), Some(scope)) => {
            cors::check(allowed, scope, route.methods, req.method(), req.headers())
        }
        _ => Verdict::Pass(None),
    }
}

/// A request to `route`: its method, its gate, its handler.
fn routed<A: App>(
    app: &A,
    surface: &Surface,
    route: &Route<A>,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Step<A::Asked> {
    if !route.methods.contains(req.method()) {
        return answered(HttpError::MethodNotAllowed {
            allow: route.methods,
        });
    }
    match admit(surface, route, &req, peer) {
        Err(e) => answered(e),
        Ok(()) => handle(app, route, req),
    }
}

/// An answer ready before anything is awaited.
fn answered<Asked>(e: HttpError) -> Step<Asked> {
    tracing::debug!(error = %e, "rejected request");
    Step::Answered(Box::new(e.into_response()))
}

/// The route's handler, on an admitted request.
fn handle<A: App>(app: &A, route: &Route<A>, req: Request<Incoming>) -> Step<A::Asked> {
    match route.handler {
        Handler::Health => Step::Answered(Box::new(text(StatusCode::OK, "ok\n"))),
        Handler::Ready => Step::Readiness,
        Handler::Metrics => Step::Answered(Box::new(metrics_response(app.metrics().registry()))),
        Handler::Fixed(answer) => Step::Answered(Box::new(answer())),
        Handler::Read(read) => match read(app, req) {
            Ok(asked) => Step::Asked(asked),
            Err(e) => answered(e),
        },
    }
}

/// The second half: the answer, its metrics and its request id.
pub(super) async fn finish<A: App>(app: &A, begun: Begun<A::Asked>) -> Response<Body> {
    let (route, method, id) = (begun.route, begun.method, begun.id);
    let m = app.metrics();
    let _in_flight = InFlight::enter(&m.in_flight);
    let work = async {
        let r = match begun.step {
            Step::Answered(r) => *r,
            // Boxed: the probes' futures (Redis, PostgreSQL, Kafka clients) would otherwise
            // make every request's future as large as theirs.
            Step::Readiness => Box::pin(readiness_response(app)).await,
            Step::Asked(asked) => match app.answer(asked).await {
                Ok(r) => r,
                Err(e) => {
                    if matches!(e, HttpError::Unavailable { .. }) {
                        let request_id = id.to_str().unwrap_or("-");
                        tracing::warn!(request_id, error = %e, "answering 503");
                    } else {
                        tracing::debug!(error = %e, "rejected request");
                    }
                    e.into_response()
                }
            },
        };
        tracing::debug!(%method, route, status = r.status().as_u16(), "answered");
        r
    };
    // Without a span (logging above debug, the usual case) the answer is awaited as it is:
    // a disabled span's wrapper still costs its checks on every poll and a copy of the
    // future (docs/benchmarks-notes.md).
    let mut resp = if begun.span.is_none() {
        work.await
    } else {
        work.instrument(begun.span).await
    };
    m.observe(route, &method, resp.status(), begun.start.elapsed());
    resp.headers_mut().insert(X_REQUEST_ID, id);
    if let Some(origin) = begun.origin {
        cors::decorate(&mut resp, origin);
    }
    resp
}

/// `http_requests_in_flight` up while a request's future lives, also when hyper drops it
/// before it completes (the client went away).
struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The gate's verdict for a scoped route; open routes and listeners without a gate pass.
fn admit<A: App>(
    surface: &Surface,
    route: &Route<A>,
    req: &Request<Incoming>,
    peer: IpAddr,
) -> Result<(), HttpError> {
    let (Some(gate), Some(scope)) = (&surface.gate, route.scope) else {
        return Ok(());
    };
    let origin = match &surface.cors {
        None => OriginCheck::Unchecked,
        Some(cors) => match req.headers().get(ORIGIN).map(HeaderValue::to_str) {
            Some(Ok(o)) if cors.allows(o) => OriginCheck::Listed,
            _ => OriginCheck::NotListed,
        },
    };
    gate.admit(&Admission {
        headers: req.headers(),
        query: req.uri().query(),
        scope,
        peer,
        origin,
    })
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
    let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(buf)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
