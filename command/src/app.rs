//! The command's HTTP handler: `POST /analytics`.

use crate::metrics::Metrics;
use crate::producer::EventProducer;
use crate::validate::{validate, Window};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use shared::auth::Scope;
use shared::config::WindowArgs;
use shared::http::{empty, Body, Check, HttpError, Route};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `POST /analytics`.
pub const ROUTES: &[Route] = &[Route {
    path: "/analytics",
    methods: &[Method::POST],
    allow: "POST",
    hot: &[("POST", 204)],
    scope: Some(Scope::Write),
}];

pub struct CommandApp {
    pub producer: Arc<EventProducer>,
    pub window: WindowArgs,
    pub metrics: Metrics,
}

impl CommandApp {
    async fn post(&self, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
        let started = Instant::now();
        let now = shared::clock::now_ms();
        let w = Window {
            now_ms: now,
            max_event_age_ms: self.window.max_event_age_ms(),
            max_future_skew_ms: self.window.max_future_skew_ms(),
        };
        let event = validate(req.uri().query().unwrap_or(""), w).map_err(|rejection| {
            self.metrics
                .rejected
                .with_label_values(&[rejection.reason()])
                .inc();
            HttpError::BadRequest(rejection.to_string())
        })?;
        let result = self.producer.send(&event).await;
        self.metrics
            .queue_depth
            .set(self.producer.queue_depth() as i64);
        match result {
            Ok(()) => {
                self.metrics
                    .accepted
                    .with_label_values(&[event.kind.as_str()])
                    .inc();
                self.metrics
                    .produce_latency
                    .observe(started.elapsed().as_secs_f64());
                Ok(empty(StatusCode::NO_CONTENT))
            }
            Err(e) => {
                tracing::debug!(error = %e, "event not accepted");
                self.metrics
                    .unavailable
                    .with_label_values(&[e.cause()])
                    .inc();
                Err(HttpError::Unavailable {
                    message: e.client_message(),
                    retry_after_secs: 1,
                })
            }
        }
    }
}

impl shared::http::App for CommandApp {
    fn routes(&self) -> &'static [Route] {
        ROUTES
    }

    async fn handle(
        &self,
        _route: &'static Route,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, HttpError> {
        self.post(&req).await
    }

    async fn readiness(&self) -> Vec<Check> {
        let p = self.producer.clone();
        let result = tokio::task::spawn_blocking(move || p.probe(Duration::from_secs(2)))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        vec![Check {
            name: "kafka",
            result,
        }]
    }

    fn registry(&self) -> &prometheus::Registry {
        &self.metrics.registry
    }

    fn http_metrics(&self) -> &shared::metrics::HttpMetrics {
        &self.metrics.http
    }
}
