//! The drain of [`super::serve`] against a real socket: a request in hand when the server is
//! told to stop is answered, an idle keep-alive connection is closed, and `serve` returns
//! once both are gone (not at `--shutdown-timeout`, which is an hour here).

use super::{serve, text, App, Check, Handler, HttpError, HttpMetrics, Reply, Route, Surface};
use analytics_runtime::config::RuntimeArgs;
use clap::Parser;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// `GET /slow` answers once the test releases it.
struct Slow {
    metrics: HttpMetrics,
    started: Notify,
    release: Notify,
}

fn read(_: &Slow, _: Request<Incoming>) -> Result<(), HttpError> {
    Ok(())
}

impl App for Slow {
    const ROUTES: &'static [Route<Self>] = &[Route {
        path: "/slow",
        methods: &[Method::GET],
        hot: &[],
        scope: None,
        handler: Handler::Read(read),
    }];
    type Asked = ();

    async fn answer(&self, (): ()) -> Reply {
        self.started.notify_one();
        self.release.notified().await;
        Ok(text(StatusCode::OK, "done\n"))
    }

    async fn readiness(&self) -> Vec<Check> {
        Vec::new()
    }

    fn metrics(&self) -> &HttpMetrics {
        &self.metrics
    }
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// Reads one answer with a `content-length` body, leaving the connection open.
async fn read_answer(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a content-length");
            if body.len() >= len {
                return text;
            }
        }
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before a whole answer: {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_stop_answers_the_request_in_hand_and_closes_idle_connections() {
    let limit = Duration::from_secs(60); // a hang fails the test; no duration is asserted
    let flags = Flags::parse_from(["test", "--shutdown-timeout", "1h"]);
    let app = Arc::new(Slow {
        metrics: HttpMetrics::new(&prometheus::Registry::new()),
        started: Notify::new(),
        release: Notify::new(),
    });
    let listener = super::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let server = tokio::spawn({
        let (app, cancel) = (app.clone(), cancel.clone());
        async move { serve(listener, app, Surface::internal(), cancel, &flags.runtime).await }
    });

    // An idle keep-alive connection, after one answer.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut idle).await.starts_with("HTTP/1.1 200"));
    // A request in hand.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(limit, app.started.notified())
        .await
        .expect("the slow request never started");

    cancel.cancel();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(limit, idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection was not closed")
        .unwrap();
    assert_eq!(n, 0, "the idle connection got {rest:?}");
    assert!(!server.is_finished(), "stopped with a request in hand");

    app.release.notify_one();
    let mut answer = String::new();
    tokio::time::timeout(limit, busy.read_to_string(&mut answer))
        .await
        .expect("the connection in hand was not closed after its answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("done\n"), "{answer}");
    tokio::time::timeout(limit, server)
        .await
        .expect("serve did not return once drained")
        .unwrap();
    assert_eq!(app.metrics.in_flight.get(), 0);
}
