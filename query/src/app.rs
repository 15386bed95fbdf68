//! The query's HTTP handler: `GET /analytics?timestamp={ms}`.

use crate::body;
use crate::lookup::Lookup;
use crate::metrics::Metrics;
use crate::range;
use analytics_http::{text, Check, Handler, HttpError, Reply, Route, Scope, GET_HEAD};
use analytics_model::hour::HourStart;
use analytics_model::query_string;
use analytics_store::pg::PgStore;
use analytics_store::redis_store::RedisStore;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use std::sync::Arc;

/// `GET`/`HEAD /analytics`, the OpenAPI document and the analytics page.
const ROUTES: &[Route<QueryApp>] = &{
    let [index, script, style] = crate::page::routes();
    [
        Route {
            path: "/analytics",
            methods: GET_HEAD,
            hot: &[("GET", 200), ("HEAD", 200)],
            scope: Some(Scope::Read),
            handler: Handler::Read(QueryApp::read),
        },
        analytics_edge::openapi::route(),
        index,
        script,
        style,
    ]
};

pub struct QueryApp {
    pub lookup: Lookup,
    pub redis: Arc<RedisStore>,
    pub pg: Arc<PgStore>,
    pub metrics: Metrics,
    /// `--max-range-hours`.
    pub max_range_hours: u32,
}

/// What a request to `/analytics` asks for (read by [`QueryApp::read`]).
pub enum Asked {
    /// `timestamp`: the hour containing it.
    Hour { hour: HourStart, json: bool },
    /// `from` and `to`: each hour of the range.
    Range { range: range::Range, json: bool },
}

/// Whether an `Accept` header names JSON. A scan of the few headers rather than a hashed
/// lookup: cheaper for the handful a client sends (a GET's hottest path).
fn wants_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .iter()
        .any(|(name, v)| name == ACCEPT && v.to_str().is_ok_and(|v| v.contains("application/json")))
}

fn unavailable() -> HttpError {
    HttpError::Unavailable {
        message: "analytics store unavailable, retry later",
        retry_after_secs: 1,
    }
}

impl QueryApp {
    /// The totals of `hour`, as text or JSON.
    async fn hour(&self, hour: HourStart, json: bool) -> Reply {
        let totals = self.lookup.totals(hour).await.map_err(|_| unavailable())?;
        if json {
            let body = body::json(hour, &totals);
            let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        } else {
            Ok(text(StatusCode::OK, body::text(&totals)))
        }
    }

    /// One row per hour of `range`, as CSV or a JSON array.
    async fn range(&self, range: range::Range, json: bool) -> Reply {
        let hours: Vec<HourStart> = range.hour_starts().collect();
        let totals = self
            .lookup
            .totals_many(&hours)
            .await
            .map_err(|_| unavailable())?;
        let rows: Vec<(HourStart, _)> = hours.into_iter().zip(totals).collect();
        let (body, content_type) = if json {
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

impl QueryApp {
    /// Reads `GET /analytics`: one hour or a range, as text or JSON.
    fn read(&self, req: Request<Incoming>) -> Result<Asked, HttpError> {
        let query = req.uri().query().unwrap_or("");
        let json = wants_json(&req);
        // Most GETs are `timestamp={digits}` alone: read without the parameter list.
        if let Some(timestamp) = query_string::lone_timestamp(query) {
            let hour = timestamp.hour();
            return Ok(Asked::Hour { hour, json });
        }
        let bad = |e: &dyn std::fmt::Display| HttpError::BadRequest(e.to_string());
        let params = query_string::parse(query).map_err(|e| bad(&e))?;
        Ok(
            match range::parse(&params, self.max_range_hours).map_err(|e| bad(&e))? {
                Some(range) => Asked::Range { range, json },
                None => Asked::Hour {
                    hour: query_string::parse_timestamp(&params)
                        .map_err(|e| bad(&e))?
                        .hour(),
                    json,
                },
            },
        )
    }
}

impl analytics_http::App for QueryApp {
    const ROUTES: &'static [Route<Self>] = ROUTES;
    type Asked = Asked;

    async fn answer(&self, asked: Asked) -> Reply {
        match asked {
            Asked::Hour { hour, json } => self.hour(hour, json).await,
            // Boxed, like a cache miss in `Lookup::totals`: the range lookup's future is some
            // 4 KB, which inline would be every single-hour request's size too.
            Asked::Range { range, json } => Box::pin(self.range(range, json)).await,
        }
    }

    async fn readiness(&self) -> Vec<Check> {
        let (redis, pg) = tokio::join!(self.redis.ping(), self.pg.ping());
        vec![Check::new("redis", redis), Check::new("postgres", pg)]
    }

    fn metrics(&self) -> &analytics_http::HttpMetrics {
        &self.metrics.http
    }
}
