//! The command's HTTP handlers: `POST /analytics` (one event) and `POST /analytics/batch`
//! (NDJSON, see [`crate::batch`]).

use crate::batch::{BatchError, Limits, Parser};
use crate::encoding::{BodyError, Decoder, Encoding};
use crate::metrics::Metrics;
use crate::producer::{EventProducer, ProduceError};
use crate::validate::{validate, Window};
use analytics_http::{empty, Body, Check, Handler, HttpError, Reply, Route, Scope};
use analytics_model::event::Event;
use analytics_model::window::WindowArgs;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `POST /analytics`, `POST /analytics/batch` and the OpenAPI document.
const ROUTES: &[Route<CommandApp>] = &[
    Route {
        path: "/analytics",
        methods: &[Method::POST],
        hot: &[("POST", 204)],
        scope: Some(Scope::Write),
        handler: Handler::Read(CommandApp::read_post),
    },
    Route {
        path: "/analytics/batch",
        methods: &[Method::POST],
        hot: &[("POST", 200)],
        scope: Some(Scope::Write),
        handler: Handler::Read(CommandApp::read_batch),
    },
    Route {
        path: "/t.js",
        methods: analytics_http::GET_HEAD,
        hot: &[("GET", 200)],
        scope: None,
        handler: Handler::Read(CommandApp::read_tracker),
    },
    analytics_edge::openapi::route(),
];

/// The media type of a batch.
pub const NDJSON: &str = "application/x-ndjson";

/// The media type a browser's `navigator.sendBeacon` can send without a preflight: a batch
/// may use it too, with the same NDJSON body.
pub const BEACON: &str = "text/plain";

/// What a `415` for a batch's media type asks for.
const BATCH_MEDIA_TYPES: &str = "application/x-ndjson (or text/plain, as a beacon sends it)";

/// What a request to the command asks for (read by its route's handler).
pub enum Asked {
    /// `POST /analytics`: one valid event, received at `started`.
    Post { event: Event, started: Instant },
    /// `POST /analytics/batch` of the right media type and a known coding: its body, still
    /// to be read.
    Batch { body: Incoming, encoding: Encoding },
    /// `GET /t.js`; `fresh` when the client's copy is current (`304`).
    Tracker { fresh: bool },
}

pub struct CommandApp {
    pub producer: Arc<EventProducer>,
    pub window: WindowArgs,
    pub batch_limits: Limits,
    pub metrics: Metrics,
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

impl CommandApp {
    /// Reads `GET /t.js`.
    fn read_tracker(&self, req: Request<Incoming>) -> Result<Asked, HttpError> {
        Ok(Asked::Tracker {
            fresh: crate::tracker::fresh(req.headers()),
        })
    }

    fn window(&self) -> Window {
        Window {
            now: analytics_model::clock::now(),
            max_event_age_ms: self.window.max_event_age_ms(),
            max_future_skew_ms: self.window.max_future_skew_ms(),
        }
    }

    fn unavailable(&self, e: &ProduceError) {
        tracing::debug!(error = %e, "event not accepted");
        self.metrics
            .unavailable
            .with_label_values(&[e.cause()])
            .inc();
    }

    fn accepted(&self, event: &Event) {
        self.metrics
            .accepted
            .with_label_values(&[event.kind.as_str()])
            .inc();
    }

    /// Validates a single event: the 400 of a bad one, with its reason counted.
    fn read_post(&self, req: Request<Incoming>) -> Result<Asked, HttpError> {
        let started = Instant::now();
        let event =
            validate(req.uri().query().unwrap_or(""), self.window()).map_err(|rejection| {
                self.metrics
                    .rejected
                    .with_label_values(&[rejection.reason()])
                    .inc();
                HttpError::BadRequest(rejection.to_string())
            })?;
        Ok(Asked::Post { event, started })
    }

    async fn post(&self, event: Event, started: Instant) -> Reply {
        let result = self.producer.send(&event).await;
        self.metrics
            .queue_depth
            .set(self.producer.queue_depth() as i64);
        match result {
            Ok(()) => {
                self.accepted(&event);
                self.metrics.acknowledged(started);
                Ok(empty(StatusCode::NO_CONTENT))
            }
            Err(e) => {
                self.unavailable(&e);
                Err(HttpError::Unavailable {
                    message: e.client_message(event.id.is_some()),
                    retry_after_secs: 1,
                })
            }
        }
    }

    /// Checks a batch's media type, coding and declared length; its body is read by
    /// [`CommandApp::post_batch`].
    fn read_batch(&self, req: Request<Incoming>) -> Result<Asked, HttpError> {
        let media_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim);
        let accepted = media_type
            .is_some_and(|v| v.eq_ignore_ascii_case(NDJSON) || v.eq_ignore_ascii_case(BEACON));
        if !accepted {
            return Err(HttpError::UnsupportedMediaType(BATCH_MEDIA_TYPES));
        }
        let encoding = Encoding::of(req.headers())
            .map_err(|unknown| HttpError::UnsupportedEncoding(unknown.0))?;
        let max = self.batch_limits.max_body_bytes;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(HttpError::PayloadTooLarge(format!(
                "the body is larger than {max} bytes (--max-body-bytes)"
            )));
        }
        Ok(Asked::Batch {
            body: req.into_body(),
            encoding,
        })
    }

    /// Reads a batch's body as it arrives, decoded ([`crate::encoding`]) into its parser.
    async fn read_body(&self, mut body: Incoming, encoding: Encoding) -> Result<Parser, HttpError> {
        let limits = self.batch_limits;
        let parser = Parser::new(limits, self.window());
        let mut decoder = Decoder::new(encoding, parser, limits.max_body_bytes);
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| HttpError::BadRequest(format!("reading the body: {e}")))?;
            if let Some(data) = frame.data_ref() {
                decoder.push(data).map_err(|e| self.body_error(e))?;
            }
        }
        decoder.finish().map_err(|e| self.body_error(e))
    }

    fn body_error(&self, e: BodyError) -> HttpError {
        match e {
            BodyError::Batch(e) => batch_error(e),
            BodyError::TooLargeAsSent(max) => HttpError::PayloadTooLarge(format!(
                "the body as sent is larger than {max} bytes (--max-body-bytes)"
            )),
            BodyError::Corrupt(reason) => {
                self.metrics
                    .rejected
                    .with_label_values(&[crate::metrics::BATCH_INVALID])
                    .inc();
                HttpError::BadRequest(reason)
            }
        }
    }

    async fn post_batch(&self, body: Incoming, encoding: Encoding) -> Reply {
        let started = Instant::now();
        let parser = self.read_body(body, encoding).await?;
        let events = match parser.finish() {
            Ok(events) => events,
            Err(BatchError::Invalid { errors, total }) => {
                self.metrics
                    .rejected
                    .with_label_values(&[crate::metrics::BATCH_INVALID])
                    .inc();
                return Ok(json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({
                        "error": format!("{total} invalid line(s); no event of the batch was accepted"),
                        "invalid_lines": total,
                        "errors": errors,
                    }),
                ));
            }
            Err(e) => return Err(batch_error(e)),
        };
        self.produce_all(&events, started).await
    }

    /// Enqueues every event, then awaits every acknowledgement.
    async fn produce_all(&self, events: &[Event], started: Instant) -> Reply {
        let mut pending = Vec::with_capacity(events.len());
        let mut failure = None;
        for e in events {
            match self.producer.enqueue(e) {
                Ok(p) => pending.push((e, p)),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        let mut acknowledged = 0usize;
        for (event, p) in pending {
            match p.acknowledged().await {
                Ok(()) => {
                    acknowledged += 1;
                    self.accepted(event);
                }
                Err(err) => {
                    failure.get_or_insert(err);
                }
            }
        }
        self.metrics
            .queue_depth
            .set(self.producer.queue_depth() as i64);
        if let Some(err) = failure {
            self.unavailable(&err);
            let mut r = json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({
                    "error": format!(
                        "{acknowledged} of {} events were acknowledged before the event store failed; \
                         re-sending the whole batch is safe for events with an id (they count once), \
                         events without an id may count twice",
                        events.len()
                    ),
                    "acknowledged": acknowledged,
                }),
            );
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1));
            return Ok(r);
        }
        self.metrics.acknowledged(started);
        Ok(json(
            StatusCode::OK,
            serde_json::json!({ "accepted": events.len() }),
        ))
    }
}

fn batch_error(e: BatchError) -> HttpError {
    match e {
        BatchError::TooLarge(reason) => HttpError::PayloadTooLarge(reason),
        BatchError::Empty => HttpError::BadRequest("the batch holds no event".into()),
        BatchError::Invalid { total, .. } => {
            HttpError::BadRequest(format!("{total} invalid line(s)"))
        }
    }
}

impl analytics_http::App for CommandApp {
    const ROUTES: &'static [Route<Self>] = ROUTES;
    type Asked = Asked;

    async fn answer(&self, asked: Asked) -> Reply {
        match asked {
            Asked::Post { event, started } => self.post(event, started).await,
            // Boxed: the batch's future (body collection, many deliveries) is far larger than
            // a single POST's, which inline would carry its size.
            Asked::Batch { body, encoding } => Box::pin(self.post_batch(body, encoding)).await,
            Asked::Tracker { fresh } => Ok(crate::tracker::answer(fresh)),
        }
    }

    async fn readiness(&self) -> Vec<Check> {
        let p = self.producer.clone();
        let result = tokio::task::spawn_blocking(move || p.probe(Duration::from_secs(2)))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        vec![Check::new("kafka", result)]
    }

    fn metrics(&self) -> &analytics_http::HttpMetrics {
        &self.metrics.http
    }
}
