//! The accept loop: connection limit, TLS, header-read timeout, graceful drain.
//!
//! Hand-written over hyper's connection builder rather than a framework's `serve`: a
//! connection beyond `--max-connections` is answered `503` with
//! `Retry-After` and closed (not left in the kernel's backlog), the TLS handshake runs in the
//! connection's task under the same header-read timeout, and the drain is bounded by
//! `--shutdown-timeout`; none of these is a setting of `axum::serve`. The header-read
//! timeout is kept per connection by [`head_deadline`] rather than by hyper's per-request
//! timer, and the drain and that watch are polled only when they wake (`conn::guard`; the
//! modules say why).

use crate::conn::guard::{Ended, Guarded};
use crate::conn::head_deadline::{self, Activity};
use crate::TlsAcceptor;
use crate::{dispatch, App, Body, HttpError, Surface, MAX_HEAD_BYTES};
use analytics_runtime::config::RuntimeArgs;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

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
    app.metrics().resolve_hot::<A>();
    let server = Server::new(app, surface, runtime);
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
        server.accept(stream, peer.ip(), &cancel);
    }
    drop(listener);
    server.drain(runtime).await;
}

/// The accept loop's state: the connection slots and the two connection builders.
struct Server<A> {
    app: Arc<A>,
    surface: Arc<Surface>,
    head_timeout: Duration,
    slots: Arc<Semaphore>,
    /// Keep-alive connections of admitted clients.
    builder: http1::Builder,
    /// One answer, then closed: connections beyond `--max-connections`.
    refuse: http1::Builder,
}

impl<A: App> Server<A> {
    fn new(app: Arc<A>, surface: Surface, runtime: &RuntimeArgs) -> Self {
        let head_timeout = runtime.header_read_timeout;
        let mut builder = http1::Builder::new();
        builder
            .keep_alive(true)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_header_size(MAX_HEAD_BYTES);
        let mut refuse = http1::Builder::new();
        refuse
            .keep_alive(false)
            .max_buf_size(16 * 1024)
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout);
        Self {
            app,
            surface: Arc::new(surface),
            head_timeout,
            slots: Arc::new(Semaphore::new(runtime.max_connections as usize)),
            builder,
            refuse,
        }
    }

    /// Serves a new connection in a task of its own, or refuses it when every slot is taken.
    fn accept(&self, stream: TcpStream, peer: IpAddr, cancel: &CancellationToken) {
        let tls = self.surface.gate.as_ref().and_then(|g| g.tls());
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => self.spawn_served(stream, tls, peer, slot, cancel.clone()),
            Err(_) => self.spawn_refused(stream, tls),
        }
    }

    /// A connection beyond `--max-connections`: one `503` and closed, within the header-read
    /// timeout; not drained, only dropped if the server stops first.
    fn spawn_refused(&self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        self.app.metrics().connections_refused.inc();
        let svc = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(too_many_connections())
        });
        let (refuse, head_timeout) = (self.refuse.clone(), self.head_timeout);
        tokio::spawn(async move {
            if let Some(io) = handshake(stream, tls, head_timeout).await {
                let _ = refuse.serve_connection(io, svc).await;
            }
        });
    }

    /// An admitted connection, holding `slot` until it ends.
    fn spawn_served(
        &self,
        stream: TcpStream,
        tls: Option<TlsAcceptor>,
        peer: IpAddr,
        slot: OwnedSemaphorePermit,
        drain: CancellationToken,
    ) {
        let open = self.app.metrics().open_connections.clone();
        open.inc();
        // One Arc for the connection's state, cloned once per request (not one per part:
        // each clone and drop is an atomic both cores contend for).
        let conn = Arc::new((self.app.clone(), self.surface.clone(), Activity::default()));
        let svc = {
            let conn = conn.clone();
            hyper::service::service_fn(move |req| {
                let conn = conn.clone();
                // The request is read and dropped here, before its future: see `dispatch`.
                let begun = dispatch::begin(&*conn.0, &conn.1, peer, req);
                async move {
                    let (app, _, activity) = &*conn;
                    let _busy = activity.begin();
                    Ok::<_, std::convert::Infallible>(dispatch::finish(&**app, begun).await)
                }
            })
        };
        let (builder, head_timeout) = (self.builder.clone(), self.head_timeout);
        tokio::spawn(async move {
            if let Some(io) = handshake(stream, tls, head_timeout).await {
                let served = builder.serve_connection(io, svc);
                if let Err(e) = guarded(served, &drain, &conn.2, head_timeout).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            open.dec();
            drop(slot);
        });
    }

    /// Waits until every connection has ended (each holds a slot until then), for at most
    /// `--shutdown-timeout`.
    async fn drain(self, runtime: &RuntimeArgs) {
        tokio::select! {
            _ = self.slots.acquire_many(runtime.max_connections) => tracing::debug!("all connections drained"),
            _ = tokio::time::sleep(runtime.shutdown_timeout) => tracing::warn!("shutdown timeout: dropping open connections"),
        }
    }
}

/// A connection's stream: as accepted, or after its TLS handshake.
#[cfg(feature = "tls")]
type Io =
    TokioIo<tokio_util::either::Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>>;

/// The connection's stream, after the TLS handshake when `tls` is set (within
/// `head_timeout`); `None` when the handshake failed or took too long.
#[cfg(feature = "tls")]
async fn handshake(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    head_timeout: Duration,
) -> Option<Io> {
    use tokio_util::either::Either;
    let Some(tls) = tls else {
        return Some(TokioIo::new(Either::Left(stream)));
    };
    match tokio::time::timeout(head_timeout, tls.accept(stream)).await {
        Ok(Ok(s)) => Some(TokioIo::new(Either::Right(s))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// A connection's stream, as accepted (a build without the `tls` feature serves HTTP only).
#[cfg(not(feature = "tls"))]
type Io = TokioIo<TcpStream>;

/// The connection's stream: there is no TLS acceptor in a build without the `tls` feature.
#[cfg(not(feature = "tls"))]
async fn handshake(stream: TcpStream, tls: Option<TlsAcceptor>, _: Duration) -> Option<Io> {
    match tls {
        None => Some(TokioIo::new(stream)),
        Some(never) => match never {},
    }
}

/// Serves a connection until it ends: gracefully (the request in hand answered, then closed)
/// once `drain` fires, or at once when it has been waiting for a request head for
/// `head_timeout` ([`head_deadline`]).
async fn guarded<C>(
    conn: C,
    drain: &CancellationToken,
    activity: &Activity,
    head_timeout: Duration,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let idle = head_deadline::watch(activity, head_timeout);
    match Guarded::new(conn, drain.cancelled(), idle).await {
        Ended::Served(r) => r,
        Ended::Idle => {
            tracing::debug!("no request head within --header-read-timeout: connection closed");
            Ok(())
        }
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
