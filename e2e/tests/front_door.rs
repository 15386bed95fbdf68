//! The front door (`deploy/nginx/nginx.conf.template`, nginx from Debian) in front of the
//! real pipeline: the config passes `nginx -t`; single events, batches, single hours and
//! ranges go through it and come out exact; operator endpoints and other paths are `404`,
//! other methods `405` with `Allow`; the services' `429` and `503` with `Retry-After` pass
//! through untouched, and nginx's own failure to reach a service is a `503` with
//! `Retry-After`.

use anyhow::{ensure, Result};
use e2e::http::Client;
use e2e::workload::{dataset, post_recorded, wait_exact, Rng, Truth, HOUR};
use e2e::{Flags, Pipeline, PipelineOptions, Stack, QUERY_ARGS};
use std::time::Duration;

/// The origin of the page allowed to call the services (`--cors-allow-origins`).
const PAGE: &str = "http://page.example:8000";

/// CORS through the front door: preflights, a write from the page counted, a write from
/// another origin refused and never counted (the exactness check that follows would see it).
async fn cross_origin(front: &str, now: i64, truth: &mut Truth) -> Result<()> {
    let mut c = Client::connect(front).await?;
    for (path, method, allow) in [
        ("/analytics/batch", "POST", "POST"),
        ("/analytics", "POST", "POST"),
        ("/analytics?timestamp=1", "GET", "GET, HEAD"),
    ] {
        let r = c
            .request(
                "OPTIONS",
                path,
                &[
                    ("Origin", PAGE),
                    ("Access-Control-Request-Method", method),
                    (
                        "Access-Control-Request-Headers",
                        "content-type,content-encoding",
                    ),
                ],
            )
            .await?;
        ensure!(r.status == 204, "preflight {path}: {}", r.status);
        ensure!(
            r.header("access-control-allow-origin") == Some(PAGE),
            "{:?}",
            r.headers
        );
        ensure!(
            r.header("access-control-allow-methods") == Some(allow),
            "{:?}",
            r.headers
        );
        let allowed = r.header("access-control-allow-headers").unwrap_or("");
        ensure!(allowed.contains("Content-Encoding"), "{:?}", r.headers);
        ensure!(r.header("vary") == Some("Origin"), "{:?}", r.headers);
    }
    let evil = [("Origin", "http://evil.example")];
    let r = c.request("OPTIONS", "/analytics", &evil).await?;
    ensure!(r.status == 403 && r.header("access-control-allow-origin").is_none());
    let post = |user: &str| format!("/analytics?timestamp={now}&user={user}&click&id=x");
    let r = c.request("POST", &post("cors-evil"), &evil).await?;
    ensure!(r.status == 403, "{} {}", r.status, r.body);
    ensure!(r.body.contains("evil.example"), "{}", r.body);
    let r = c
        .request("POST", &post("cors-page"), &[("Origin", PAGE)])
        .await?;
    ensure!(r.status == 204, "{} {}", r.status, r.body);
    ensure!(
        r.header("access-control-allow-origin") == Some(PAGE),
        "{:?}",
        r.headers
    );
    let exposed = r.header("access-control-expose-headers").unwrap_or("");
    ensure!(exposed.contains("X-Request-Id") && exposed.contains("Retry-After"));
    truth.add(&loadgen::truth::Post {
        ts: now,
        user: "cors-page".into(),
        click: true,
        id: Some("x".into()),
    });
    // Reads from another origin are answered, without CORS headers (the browser keeps them
    // from the page); from the page, with them.
    let read = format!("/analytics?timestamp={now}");
    let r = c.request("GET", &read, &evil).await?;
    ensure!(r.status == 200 && r.header("access-control-allow-origin").is_none());
    let r = c.request("GET", &read, &[("Origin", PAGE)]).await?;
    ensure!(r.status == 200 && r.header("access-control-allow-origin") == Some(PAGE));
    Ok(())
}

#[test]
fn the_config_passes_nginx_t() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("front-door-t-{}", std::process::id()));
    let config = Stack::front_door_config(
        &dir,
        8080,
        &["127.0.0.1:8081".into()],
        &["127.0.0.1:8082".into(), "127.0.0.1:18082".into()],
    )?;
    let out = Stack::nginx_command(&config)?.arg("-t").output()?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "nginx -t: {text}");
    ensure!(text.contains("syntax is ok"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_through_the_front_door() -> Result<()> {
    let stack = Stack::start()?;
    let query_flags = [QUERY_ARGS, &["--cors-allow-origins", PAGE]].concat();
    let pipeline = Pipeline::spawn(
        &stack,
        PipelineOptions {
            command: Flags::args(&["--cors-allow-origins", PAGE]),
            query: Flags::args(&query_flags),
            ..PipelineOptions::default()
        },
    )?;
    let limited = stack.service(
        "query",
        &[QUERY_ARGS, &["--rate-limit", "1", "--rate-burst", "1"]].concat(),
    )?;
    let mut services = pipeline.services();
    services.push(&limited);
    e2e::all_ready(&services).await?;
    let (command, query) = (&pipeline.command, &pipeline.query);
    let front = stack.front_door(&[command.addr()], &[query.addr()])?;
    let f = front.addr();

    // Writes and reads through the front door are exact.
    let now = analytics_model::clock::now_ms();
    let h0 = now.div_euclid(HOUR) * HOUR;
    let mut rng = Rng::seeded(now as u64);
    let posts = dataset(&mut rng, 400, &[0, 1, 3], now);
    let mut truth = Truth::default();
    post_recorded(&f, &posts, 4, &mut truth).await?;
    let mut c = Client::connect(&f).await?;
    let batch = format!(
        "{{\"timestamp\":{now},\"user\":\"front-batch\",\"event\":\"click\",\"id\":\"fb-1\"}}\n"
    );
    let r = c.post_batch(batch.as_bytes()).await?;
    ensure!(
        r.status == 200 && r.body == r#"{"accepted":1}"#,
        "{} {}",
        r.status,
        r.body
    );
    truth.add(&loadgen::truth::Post {
        ts: now,
        user: "front-batch".into(),
        click: true,
        id: Some("fb-1".into()),
    });
    // A compressed beacon passes through as sent: nginx neither decodes nor drops the coding.
    let beacon = format!(
        "{{\"timestamp\":{now},\"user\":\"front-beacon\",\"event\":\"impression\",\"id\":\"fb-2\"}}\n"
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, beacon.as_bytes())?;
    let r = c
        .request_with_body(
            "POST",
            "/analytics/batch",
            &[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")],
            &gz.finish()?,
        )
        .await?;
    ensure!(r.status == 200, "gzip beacon: {} {}", r.status, r.body);
    truth.add(&loadgen::truth::Post {
        ts: now,
        user: "front-beacon".into(),
        click: false,
        id: Some("fb-2".into()),
    });
    cross_origin(&f, now, &mut truth).await?;
    let hours = [h0, h0 - HOUR, h0 - 3 * HOUR];
    wait_exact(&f, &truth, &hours, Duration::from_secs(60), "through nginx").await?;
    let r = c
        .request(
            "GET",
            &format!("/analytics?from={}&to={}", h0 - 3 * HOUR, now),
            &[],
        )
        .await?;
    ensure!(r.status == 200 && r.header("content-type") == Some("text/csv; charset=utf-8"));
    ensure!(r.body.lines().count() == 5, "{}", r.body);
    let r = c
        .request("HEAD", &format!("/analytics?timestamp={now}"), &[])
        .await?;
    ensure!(r.status == 200, "HEAD {}", r.status);
    // The request id is passed on, or made up.
    let r = c
        .request(
            "GET",
            &format!("/analytics?timestamp={now}"),
            &[("X-Request-Id", "front-1")],
        )
        .await?;
    ensure!(
        r.header("x-request-id") == Some("front-1"),
        "{:?}",
        r.headers
    );

    // The page is there, from the query service.
    let r = Client::connect(&f).await?.request("GET", "/", &[]).await?;
    ensure!(r.status == 200 && r.header("content-type") == Some("text/html; charset=utf-8"));
    let r = Client::connect(&f)
        .await?
        .request("GET", "/assets/page.js", &[])
        .await?;
    ensure!(r.status == 200, "page.js {}", r.status);
    // Nothing else is exposed.
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/openapi.yaml",
        "/index.html",
        "/analytics/x",
    ] {
        let r = Client::connect(&f).await?.request("GET", path, &[]).await?;
        ensure!(r.status == 404, "{path}: {} {}", r.status, r.body);
    }
    for (method, path, allow) in [
        ("PUT", "/analytics", "GET, HEAD, POST"),
        ("DELETE", "/analytics", "GET, HEAD, POST"),
        ("GET", "/analytics/batch", "POST"),
    ] {
        let r = Client::connect(&f)
            .await?
            .request(method, path, &[])
            .await?;
        ensure!(r.status == 405, "{method} {path}: {}", r.status);
        ensure!(
            r.header("allow") == Some(allow),
            "{method} {path}: {:?}",
            r.headers
        );
    }

    // The services' answers pass through: a 400 and a 429 with Retry-After.
    let r = Client::connect(&f)
        .await?
        .request("POST", "/analytics?timestamp=abc&user=a&click", &[])
        .await?;
    ensure!(
        r.status == 400 && r.body.starts_with("bad request:"),
        "{}",
        r.body
    );
    let limited_front = stack.front_door(&[command.addr()], &[limited.addr()])?;
    let mut l = Client::connect(&limited_front.addr()).await?;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = l
            .request("GET", &format!("/analytics?timestamp={now}"), &[])
            .await?;
        if r.status == 429 {
            ensure!(r.header("retry-after").is_some(), "{:?}", r.headers);
            ensure!(r.body.starts_with("too many requests"), "{}", r.body);
        }
        statuses.push(r.status);
    }
    ensure!(statuses.contains(&429), "{statuses:?}");

    // A command nobody answers for: nginx's own 503 with Retry-After.
    let dead = format!("127.0.0.1:{}", e2e::free_port());
    let dead_front = stack.front_door(&[dead], &[query.addr()])?;
    let r = Client::connect(&dead_front.addr())
        .await?
        .request(
            "POST",
            &format!("/analytics?timestamp={now}&user=a&click"),
            &[],
        )
        .await?;
    ensure!(
        r.status == 503 && r.header("retry-after") == Some("1"),
        "{} {:?}",
        r.status,
        r.headers
    );
    ensure!(r.body.contains("was not stored"), "{}", r.body);
    Ok(())
}
