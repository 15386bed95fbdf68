//! The query's HTTP handler: `GET /analytics?timestamp={ms}`.

use crate::body;
use crate::lookup::Lookup;
use crate::metrics::Metrics;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use shared::auth::Scope;
use shared::hour::hour_start;
use shared::http::{text, Body, Check, HttpError, Route};
use shared::pg::PgStore;
use shared::query_string;
use shared::redis_store::RedisStore;
use std::sync::Arc;

/// `GET`/`HEAD /analytics`.
pub const ROUTES: &[Route] = &[Route {
    path: "/analytics",
    methods: &[Method::GET, Method::HEAD],
    allow: "GET, HEAD",
    hot: &[("GET", 200), ("HEAD", 200)],
    scope: Some(Scope::Read),
}];

pub struct QueryApp {
    pub lookup: Lookup,
    pub redis: Arc<RedisStore>,
    pub pg: Arc<PgStore>,
    pub metrics: Metrics,
}

fn wants_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

impl shared::http::App for QueryApp {
    fn routes(&self) -> &'static [Route] {
        ROUTES
    }

    async fn handle(
        &self,
        _route: &'static Route,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, HttpError> {
        let params = query_string::parse(req.uri().query().unwrap_or(""))
            .map_err(|e| HttpError::BadRequest(e.to_string()))?;
        let ts = query_string::parse_timestamp(&params)
            .map_err(|e| HttpError::BadRequest(e.to_string()))?;
        let totals = self
            .lookup
            .totals(ts)
            .await
            .map_err(|_| HttpError::Unavailable {
                message: "analytics store unavailable, retry later",
                retry_after_secs: 1,
            })?;
        if wants_json(&req) {
            let mut r = Response::new(http_body_util::Full::new(Bytes::from(body::json(
                hour_start(ts),
                &totals,
            ))));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        } else {
            Ok(text(StatusCode::OK, body::text(&totals)))
        }
    }

    async fn readiness(&self) -> Vec<Check> {
        let (redis, pg) = tokio::join!(self.redis.ping(), self.pg.ping());
        vec![
            Check {
                name: "redis",
                result: redis.map_err(|e| e.to_string()),
            },
            Check {
                name: "postgres",
                result: pg.map_err(|e| e.to_string()),
            },
        ]
    }

    fn registry(&self) -> &prometheus::Registry {
        &self.metrics.registry
    }

    fn http_metrics(&self) -> &shared::metrics::HttpMetrics {
        &self.metrics.http
    }
}
