//! The accept loop: connection limit, TLS, header-read timeout, graceful drain.
//!
//! Hand-written over hyper's connection builder rather than a framework's `serve`: a
//! connection beyond `--max-connections` is answered `503` with
//! `Retry-After` and closed (not left in the kernel's backlog), the TLS handshake runs in the
//! connection's task under the same header-read timeout, and the drain is bounded by
//! `--shutdown-timeout`; none of these is a setting of `axum::serve`. The header-read
//! timeout is kept per connection by [`head_deadline`] rather than by hyper's per-request
//! timer, and the drain and that watch are polled only when they wake ([`super::guard`]; the
//! modules say why).

use super::guard::{Ended, Guarded};
use super::head_deadline::{self, Activity};
use super::{dispatch, App, Body, HttpError, Surface, MAX_HEAD_BYTES};
use crate::config::RuntimeArgs;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
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
    let grace = runtime.shutdown_timeout;
    let head_timeout = runtime.header_read_timeout;
    let slots = Arc::new(Semaphore::new(runtime.max_connections as usize));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES);
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
            app.metrics().connections_refused.inc();
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(too_many_connections())
            });
            // One answer and closed, within the header-read timeout: not drained, only
            // dropped if the server stops first.
            let refuse = refuse.clone();
            tokio::spawn(async move {
                match tls {
                    None => {
                        let _ = refuse.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(tls) => {
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(head_timeout, tls.accept(stream)).await
                        {
                            let _ = refuse.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                }
            });
            continue;
        };
        let open = app.metrics().open_connections.clone();
        open.inc();
        // One Arc for the connection's state, cloned once per request (not one per part:
        // each clone and drop is an atomic both cores contend for).
        let conn = Arc::new((app.clone(), surface.clone(), Activity::default()));
        let peer = peer.ip();
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
        let (builder, drain) = (builder.clone(), cancel.clone());
        tokio::spawn(async move {
            let activity = &conn.2;
            let result = match tls {
                None => {
                    let served = builder.serve_connection(TokioIo::new(stream), svc);
                    guarded(served, &drain, activity, head_timeout).await
                }
                Some(tls) => match tokio::time::timeout(head_timeout, tls.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let served = builder.serve_connection(TokioIo::new(s), svc);
                        guarded(served, &drain, activity, head_timeout).await
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
    // Every connection holds one of the slots until it ends: all of them back means drained.
    tokio::select! {
        _ = slots.acquire_many(runtime.max_connections) => tracing::debug!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown timeout: dropping open connections"),
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
