//! The query's HTTP handler: `GET /analytics?timestamp={ms}`.

use crate::body;
use crate::grouped;
use crate::lookup::Lookup;
use crate::metrics::Metrics;
use crate::range;
use analytics_http::{text, Check, Handler, HttpError, Reply, Route, Scope, GET_HEAD};
use analytics_model::clock::now;
use analytics_model::event::HourTotals;
use analytics_model::hour::HourStart;
use analytics_model::query_string;
use analytics_store::membership;
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
        Route {
            path: "/analytics/total",
            methods: GET_HEAD,
            hot: &[("GET", 200)],
            scope: Some(Scope::Read),
            handler: Handler::Read(QueryApp::read_total),
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
    /// `--max-range-hours`, `--max-total-days`, `--membership-retention`.
    pub limits: grouped::Limits,
}

/// What a request to `/analytics` asks for (read by [`QueryApp::read`]).
pub enum Asked {
    /// `timestamp`: the hour containing it.
    Hour { hour: HourStart, json: bool },
    /// `from` and `to`: each hour of the range.
    Range { range: range::Range, json: bool },
    /// `from`, `to` and `interval` or `tz`: each calendar bucket.
    Buckets {
        buckets: grouped::Buckets,
        json: bool,
    },
    /// `/analytics/total`.
    Total { total: grouped::Total, json: bool },
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
        Ok(match json {
            true => typed(body::json_array(&rows), JSON),
            false => typed(body::csv(&rows), CSV),
        })
    }

    /// One row per calendar bucket: hours as [`Self::range`] reads them, longer buckets
    /// from membership (unique users) and PostgreSQL's hour counts (clicks, impressions).
    async fn buckets(&self, asked: grouped::Buckets, json: bool) -> Reply {
        let zone = &asked.zone;
        let totals = match asked.interval {
            crate::calendar::Interval::Hour => {
                let hours: Vec<HourStart> = asked.buckets.iter().map(|b| b.start).collect();
                self.lookup
                    .totals_many(&hours)
                    .await
                    .map_err(|_| unavailable())
            }
            _ => self.spans(&asked.buckets).await.map_err(store_failed),
        }?;
        let rows: Vec<(String, HourTotals)> = asked
            .buckets
            .iter()
            .map(|b| zone.rfc3339(b.start.start()))
            .zip(totals)
            .collect();
        Ok(match json {
            true => typed(body::buckets_json(asked.interval.as_str(), &rows), JSON),
            false => typed(body::buckets_csv(&rows), CSV),
        })
    }

    /// The totals of `/analytics/total`.
    async fn total(&self, total: grouped::Total, json: bool) -> Reply {
        let span = crate::calendar::Bucket {
            start: total.start,
            end: total.end,
        };
        let t = self.spans(std::slice::from_ref(&span)).await;
        let t = t.map_err(store_failed)?.remove(0);
        Ok(match json {
            true => {
                let (from, to) = (total.start.start(), total.end.start());
                let body = body::total_json(total.zone.rfc3339(from), total.zone.rfc3339(to), &t);
                typed(body, JSON)
            }
            false => text(StatusCode::OK, body::text(&t)),
        })
    }

    /// The totals of each span of hours: unique users exact from membership (a union per
    /// partition, summed), clicks and impressions summed from the hour counts.
    async fn spans(
        &self,
        spans: &[crate::calendar::Bucket],
    ) -> Result<Vec<HourTotals>, analytics_store::pg::PgError> {
        let covers: Vec<membership::Cover> = spans
            .iter()
            .map(|b| membership::cover(b.start, b.end))
            .collect();
        let (first, last) = (spans[0].start, spans[spans.len() - 1].end);
        let (sets, sums) =
            tokio::join!(self.pg.membership(&covers), self.pg.hour_sums(first, last));
        let sets = sets?;
        let sums: std::collections::BTreeMap<HourStart, (u64, u64)> =
            sums?.into_iter().map(|(h, c, i)| (h, (c, i))).collect();
        Ok(spans
            .iter()
            .zip(&covers)
            .map(|(span, cover)| {
                let hours = sums.range(span.start..span.end).map(|(_, ci)| ci);
                HourTotals {
                    unique_users: sets.distinct(cover),
                    clicks: hours.clone().map(|(c, _)| c).sum(),
                    impressions: hours.map(|(_, i)| i).sum(),
                }
            })
            .collect())
    }
}

/// A range's stores failed: logged (a set this build cannot read says so), `503` to the client.
fn store_failed(e: analytics_store::pg::PgError) -> HttpError {
    tracing::warn!(error = %e, "range lookup failed");
    unavailable()
}

const JSON: &str = "application/json";
const CSV: &str = "text/csv; charset=utf-8";

/// A `200` with `body` of `content_type`.
fn typed(body: String, content_type: &'static str) -> Response<http_body_util::Full<Bytes>> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

impl QueryApp {
    /// Reads `GET /analytics/total`.
    fn read_total(&self, req: Request<Incoming>) -> Result<Asked, HttpError> {
        let bad = |e: &dyn std::fmt::Display| HttpError::BadRequest(e.to_string());
        let params = query_string::parse(req.uri().query().unwrap_or("")).map_err(|e| bad(&e))?;
        let total = grouped::total(&params, &self.limits, now()).map_err(|e| bad(&e))?;
        let json = wants_json(&req);
        Ok(Asked::Total { total, json })
    }

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
        if let Some(buckets) =
            grouped::buckets(&params, &self.limits, now()).map_err(|e| bad(&e))?
        {
            return Ok(Asked::Buckets { buckets, json });
        }
        Ok(
            match range::parse(&params, self.limits.max_range_hours).map_err(|e| bad(&e))? {
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
            Asked::Buckets { buckets, json } => Box::pin(self.buckets(buckets, json)).await,
            Asked::Total { total, json } => Box::pin(self.total(total, json)).await,
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
