//! The query's HTTP handler: `GET /analytics?timestamp={ms}`.

use crate::body;
use crate::lookup::Lookup;
use crate::metrics::Metrics;
use crate::range;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use shared::auth::Scope;
use shared::hour::hour_start;
use shared::http::{text, Check, HttpError, Reply, Route};
use shared::pg::PgStore;
use shared::query_string;
use shared::redis_store::RedisStore;
use std::sync::Arc;

/// `GET`/`HEAD /analytics`, the OpenAPI document and the analytics page.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/analytics",
        methods: &[Method::GET, Method::HEAD],
        allow: "GET, HEAD",
        hot: &[("GET", 200), ("HEAD", 200)],
        scope: Some(Scope::Read),
    },
    shared::openapi::ROUTE,
    crate::page::INDEX_ROUTE,
    crate::page::SCRIPT_ROUTE,
    crate::page::STYLE_ROUTE,
];

pub struct QueryApp {
    pub lookup: Lookup,
    pub redis: Arc<RedisStore>,
    pub pg: Arc<PgStore>,
    pub metrics: Metrics,
    /// `--max-range-hours`.
    pub max_range_hours: u32,
}

fn wants_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

fn unavailable() -> HttpError {
    HttpError::Unavailable {
        message: "analytics store unavailable, retry later",
        retry_after_secs: 1,
    }
}

impl QueryApp {
    /// One row per hour of `range`, as CSV or a JSON array.
    async fn range(&self, req: &Request<Incoming>, range: range::Range) -> Reply {
        let hours: Vec<i64> = range.hour_starts().collect();
        let totals = self
            .lookup
            .totals_many(&hours)
            .await
            .map_err(|_| unavailable())?;
        let rows: Vec<(i64, _)> = hours.into_iter().zip(totals).collect();
        let (body, content_type) = if wants_json(req) {
            (body::json_array(&rows), "application/json")
        } else {
            (body::csv(&rows), "text/csv; charset=utf-8")
        };
        let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        Ok(r)
    }
}

impl shared::http::App for QueryApp {
    const ROUTES: &'static [Route] = ROUTES;

    async fn handle(&self, route: &'static Route, req: Request<Incoming>) -> Reply {
        if route.path == shared::openapi::ROUTE.path {
            return Ok(shared::openapi::response());
        }
        if let Some(page) = crate::page::response(route.path) {
            return Ok(page);
        }
        let params = query_string::parse(req.uri().query().unwrap_or(""))
            .map_err(|e| HttpError::BadRequest(e.to_string()))?;
        if let Some(range) = range::parse(&params, self.max_range_hours)
            .map_err(|e| HttpError::BadRequest(e.to_string()))?
        {
            // Boxed, like a cache miss in `Lookup::totals`: the range lookup's future is some
            // 4 KB, which inline would be every single-hour request's size too.
            return Box::pin(self.range(&req, range)).await;
        }
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
        vec![Check::new("redis", redis), Check::new("postgres", pg)]
    }

    fn metrics(&self) -> &shared::metrics::HttpMetrics {
        &self.metrics.http
    }
}
