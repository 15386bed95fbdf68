//! The public edge of command and query: API keys, protected mode, rate limits, TLS and the
//! admin listener, as one [`Edge`] that the HTTP server consults (as its
//! [`analytics_http::Gate`]) for every route that has a scope; and the key tool and the
//! OpenAPI document those services serve.
//!
//! The order for a request to such a route is fixed: its origin when `--cors-allow-origins`
//! is set (a preflight answered, a write from a page of another origin refused with `403`:
//! [`analytics_http::cors`]), the key (`401` when missing or
//! unknown, `403` when it lacks the route's scope), then the rate limit of its client (`429`
//! with `Retry-After`), then the handler. `/healthz`, `/readyz` and `/metrics` have no scope
//! and are always open; with `--admin-listen`, `/metrics` leaves the public listener for the
//! admin one.
//!
//! **Protected mode** (after Redis): with no keys file, a listener on a loopback address
//! serves without authentication; on any other address the service refuses to start unless
//! `--insecure-no-auth` says the risk is accepted.
//!
//! On `SIGHUP` the keys file and the TLS certificate are read again. A broken file is logged
//! and the previous keys stay, so a typo cannot lock every client out or let every client in.
//!
//! | module | job |
//! | --- | --- |
//! | this one | [`prepare`]: the edge checked before the service starts; [`Prepared::serve`]: public and admin listeners |
//! | [`args`] | [`EdgeArgs`], the flags |
//! | [`admission`] | [`Edge`]: keys, then rate limits; reloads |
//! | [`auth`] | the keys file and constant-time verification |
//! | [`ratelimit`] | the bounded per-client limiter |
//! | [`tls`] | the reloadable certificate |
//! | [`keytool`] | `keys new`: mint an API key |
//! | [`openapi`] | the OpenAPI document, served at `/openapi.yaml` |

pub mod admission;
pub mod args;
pub mod auth;
pub mod keytool;
pub mod openapi;
pub mod ratelimit;
pub mod tls;

pub use admission::{Edge, EdgeError, Refusal};
pub use args::EdgeArgs;

use analytics_http::cors::Cors;
use analytics_http::{App, Surface};
use analytics_runtime::config::RuntimeArgs;
use prometheus::Registry;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The edge of a public listener, checked and ready before the service starts anything else.
pub struct Prepared {
    edge: Arc<Edge>,
    admin: Option<TcpListener>,
    cors: Option<Cors>,
}

/// Loads the keys file and the certificate of `args`, applies protected mode to `listener`'s
/// address and binds `--admin-listen`: every way the edge can fail, before the service
/// starts its clients or logs that it listens.
pub async fn prepare(
    args: &EdgeArgs,
    registry: &Registry,
    listener: &TcpListener,
) -> anyhow::Result<Prepared> {
    let cors = Cors::parse(&args.cors_allow_origins)?;
    let edge = Arc::new(Edge::new(args, registry)?);
    edge.protect(listener.local_addr()?)?;
    let admin = match &args.admin_listen {
        Some(addr) => Some(analytics_http::bind(addr).await?),
        None => None,
    };
    Ok(Prepared { edge, admin, cors })
}

impl Prepared {
    /// Serves `app`'s API on `listener` behind the edge, and the admin endpoints on the admin
    /// listener if there is one, until `cancel`; reloads keys and certificate on SIGHUP.
    pub async fn serve<A: App>(
        self,
        listener: TcpListener,
        app: Arc<A>,
        cancel: CancellationToken,
        runtime: &RuntimeArgs,
    ) {
        let Prepared { edge, admin, cors } = self;
        tokio::spawn(edge.clone().reload_on_sighup(cancel.clone()));
        tokio::spawn(edge.clone().housekeeping(cancel.clone()));
        let admin = admin.map(|l| {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(%addr, "admin endpoints listening");
            }
            let (app, cancel, runtime) = (app.clone(), cancel.clone(), runtime.clone());
            tokio::spawn(async move {
                analytics_http::serve(l, app, Surface::admin(), cancel, &runtime).await
            })
        });
        let public = Surface::public(edge, admin.is_none(), cors);
        analytics_http::serve(listener, app, public, cancel, runtime).await;
        if let Some(a) = admin {
            let _ = a.await;
        }
    }
}
