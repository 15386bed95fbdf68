//! The HTTP contract of command and query, run in-process on port 0 with their
//! dependencies unreachable: validation answers 400 without touching anything, wrong
//! methods 405 with `Allow`, and dependency failures a clear 503 with `Retry-After`.

use anyhow::{ensure, Result};
use clap::Parser;
use e2e::http::Client;
use tokio_util::sync::CancellationToken;

/// A port nothing listens on.
fn dead_addr() -> String {
    format!("127.0.0.1:{}", e2e::free_port())
}

async fn start_command() -> Result<(String, CancellationToken)> {
    let config = command::Config::try_parse_from([
        "command",
        "--kafka-brokers",
        &dead_addr(),
        "--delivery-timeout",
        "1s",
    ])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let cancel = CancellationToken::new();
    tokio::spawn(command::run(config, listener, cancel.clone()));
    Ok((addr, cancel))
}

async fn start_query() -> Result<(String, CancellationToken)> {
    start_query_with(&[]).await
}

async fn start_query_with(extra: &[&str]) -> Result<(String, CancellationToken)> {
    let redis = format!("redis://{}/", dead_addr());
    let postgres = format!("postgres://postgres@{}/analytics", dead_addr());
    let mut args = vec!["query", "--redis-url", &redis, "--postgres-url", &postgres];
    args.extend_from_slice(extra);
    let config = query::Config::try_parse_from(args)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let cancel = CancellationToken::new();
    tokio::spawn(query::run(config, listener, cancel.clone()));
    Ok((addr, cancel))
}

#[tokio::test]
async fn command_rejects_bad_input_with_a_one_line_400() -> Result<()> {
    let (addr, cancel) = start_command().await?;
    let mut c = Client::connect(&addr).await?;
    let now = analytics_model::clock::now_ms();
    let cases = [
        "/analytics?user=a&click".to_owned(),
        "/analytics?timestamp=abc&user=a&click".to_owned(),
        "/analytics?timestamp=-5&user=a&click".to_owned(),
        format!("/analytics?timestamp={}&user=a&click", now + 3_600_000),
        format!("/analytics?timestamp={}&user=a&click", now - 25 * 3_600_000),
        format!("/analytics?timestamp={now}&click"),
        format!("/analytics?timestamp={now}&user=&click"),
        format!("/analytics?timestamp={now}&user={}&click", "x".repeat(257)),
        format!("/analytics?timestamp={now}&user=a%0Ab&click"),
        format!("/analytics?timestamp={now}&user=a"),
        format!("/analytics?timestamp={now}&user=a&click&impression"),
        format!("/analytics?timestamp={now}&user=a&event=purchase"),
        format!("/analytics?timestamp={now}&user=%ff&click"),
    ];
    for target in &cases {
        let r = c.request("POST", target, &[]).await?;
        ensure!(r.status == 400, "{target}: {} {}", r.status, r.body);
        ensure!(r.header("content-type") == Some("text/plain; charset=utf-8"));
        ensure!(
            r.body.starts_with("bad request: ") && r.body.lines().count() == 1,
            "{target}: {:?}",
            r.body
        );
    }
    let r = c
        .request(
            "GET",
            &format!("/analytics?timestamp={now}&user=a&click"),
            &[],
        )
        .await?;
    ensure!(
        r.status == 405 && r.header("allow") == Some("POST"),
        "GET on command: {}",
        r.status
    );
    let r = c.request("POST", "/elsewhere", &[]).await?;
    ensure!(r.status == 404);
    let r = c
        .request("GET", "/healthz", &[("X-Request-Id", "req-42")])
        .await?;
    ensure!(r.status == 200 && r.header("x-request-id") == Some("req-42"));
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn command_answers_503_when_the_broker_is_unreachable() -> Result<()> {
    let (addr, cancel) = start_command().await?;
    let mut c = Client::connect(&addr).await?;
    let now = analytics_model::clock::now_ms();
    for _ in 0..3 {
        let r = c
            .request(
                "POST",
                &format!("/analytics?timestamp={now}&user=a&click"),
                &[],
            )
            .await?;
        ensure!(r.status == 503, "expected 503, got {} {}", r.status, r.body);
        ensure!(r.header("retry-after") == Some("1"));
        // Never sent (breaker open), or sent without an acknowledgement: the body says which.
        ensure!(
            r.body == "event store unavailable; the event was not stored, retry later\n"
                || r.body
                    == "event store did not acknowledge in time; the event may or may not be stored\n",
            "undocumented 503 body {:?}",
            r.body
        );
        ensure!(
            !r.body.contains("rdkafka") && !r.body.contains("127.0.0.1"),
            "leaks internals: {}",
            r.body
        );
    }
    // With an id, the body says that retrying is safe.
    let r = c
        .request(
            "POST",
            &format!("/analytics?timestamp={now}&user=a&click&id=retry-1"),
            &[],
        )
        .await?;
    ensure!(r.status == 503, "{} {}", r.status, r.body);
    ensure!(
        r.body.contains("a retry with the same id is safe"),
        "{:?}",
        r.body
    );
    // A batch: 503 with Retry-After, JSON saying that re-sending the batch is safe for ids.
    let body =
        format!("{{\"timestamp\":{now},\"user\":\"a\",\"event\":\"click\",\"id\":\"b-1\"}}\n");
    let r = c.post_batch(body.as_bytes()).await?;
    ensure!(r.status == 503, "{} {}", r.status, r.body);
    ensure!(r.header("retry-after") == Some("1"));
    ensure!(r.header("content-type") == Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body)?;
    ensure!(v["acknowledged"] == 0, "{}", r.body);
    ensure!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("re-sending the whole batch is safe for events with an id")),
        "{}",
        r.body
    );
    let r = c.request("GET", "/readyz", &[]).await?;
    ensure!(
        r.status == 503 && r.body.starts_with("kafka: "),
        "readyz: {} {}",
        r.status,
        r.body
    );
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn query_validates_and_answers_503_when_both_stores_are_down() -> Result<()> {
    let (addr, cancel) = start_query().await?;
    let mut c = Client::connect(&addr).await?;
    for target in [
        "/analytics",
        "/analytics?timestamp=",
        "/analytics?timestamp=1.5",
        "/analytics?timestamp=-1",
    ] {
        let r = c.request("GET", target, &[]).await?;
        ensure!(
            r.status == 400 && r.body.starts_with("bad request: "),
            "{target}: {} {}",
            r.status,
            r.body
        );
    }
    let r = c.request("POST", "/analytics?timestamp=0", &[]).await?;
    ensure!(r.status == 405 && r.header("allow") == Some("GET, HEAD"));
    let r = c
        .request("GET", "/analytics?timestamp=1700000000000", &[])
        .await?;
    ensure!(r.status == 503, "{} {}", r.status, r.body);
    ensure!(r.header("retry-after") == Some("1"));
    ensure!(
        r.body == "analytics store unavailable, retry later\n",
        "{:?}",
        r.body
    );
    let r = c.request("GET", "/metrics", &[]).await?;
    ensure!(
        r.status == 200 && r.body.contains("analytics_http_requests_total{"),
        "metrics missing"
    );
    ensure!(r.body.contains("analytics_build_info{"));
    cancel.cancel();
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_and_are_closed() -> Result<()> {
    let (addr, cancel) = start_query_with(&["--max-connections", "2"]).await?;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(&addr).await?;
        let r = c.request("GET", "/healthz", &[]).await?;
        ensure!(r.status == 200, "{} {}", r.status, r.body);
        open.push(c);
    }
    let mut extra = Client::connect(&addr).await?;
    let r = extra.request("GET", "/healthz", &[]).await?;
    ensure!(
        r.status == 503
            && r.header("retry-after") == Some("1")
            && r.header("connection") == Some("close")
            && r.body == "too many connections, retry later\n",
        "third connection: {} {:?} {:?}",
        r.status,
        r.headers,
        r.body
    );
    ensure!(
        extra.request("GET", "/healthz", &[]).await.is_err(),
        "the refused connection stayed open"
    );
    // The connections already open are served as before.
    let r = open[0].request("GET", "/healthz", &[]).await?;
    ensure!(r.status == 200);
    let r = open[1].request("GET", "/metrics", &[]).await?;
    ensure!(
        r.body.contains("analytics_http_open_connections 2")
            && r.body
                .contains("analytics_http_connections_refused_total 1"),
        "connection metrics: {}",
        r.body
            .lines()
            .filter(|l| l.contains("connections"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A closed connection frees its slot (asynchronously, once the server sees the close).
    drop(open.pop());
    let mut served = false;
    for _ in 0..100 {
        let mut c = Client::connect(&addr).await?;
        if c.request("GET", "/healthz", &[]).await?.status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ensure!(served, "a freed slot was never reused");
    cancel.cancel();
    Ok(())
}
