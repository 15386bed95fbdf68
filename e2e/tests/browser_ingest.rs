//! Events straight from web pages (issue 27), through the front door, with a browser key:
//!
//! * over HTTP: `/t.js` with its `ETag` and a `304`; a browser key as the `key` parameter
//!   accepted only from a listed origin and only to write, a write key refused as `key`, a
//!   browser key refused by the query;
//! * in headless Chromium: a page served from **another origin** (a port of its own) includes
//!   `/t.js` with `data-key`; ten marked elements are scrolled into view and some clicked,
//!   the page is reloaded (a new page view of the same visitor), the site names the visitor
//!   (`analytics.identify`), and the page is closed at once (the rest goes by beacon); the range's totals then equal exactly what was shown and clicked, with
//!   no console error. A second visitor does the same while the command is stopped (the
//!   tracker gets 503s and keeps its events) and started again: still exact, nothing twice;
//! * the secret of the browser key appears in no log: not the services' (at debug level),
//!   not the front door's access log, which hides the query string of requests carrying one.

use anyhow::{ensure, Context, Result};
use e2e::http::Client;
use e2e::workload::{parse_body, HOUR};
use e2e::{Flags, Pipeline, PipelineOptions, Stack, QUERY_ARGS};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BROWSER_KEY: &str = "ak_browser_key_of_the_shop_for_tests";
const WRITE_KEY: &str = "ak_write_key_of_a_server";
const READ_KEY: &str = "ak_read_key_of_a_dashboard";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_counts_exactly_through_the_front_door() -> Result<()> {
    let cache = e2e::stack::home_cache();
    let playwright = e2e::stack::tool("PLAYWRIGHT_DIR", &[cache.join("playwright-core-1.56.0")])?;
    let chromium = e2e::stack::tool("CHROMIUM_BIN", &["/usr/bin/chromium".into()])?;
    let stack = Stack::start()?;
    let keys = stack.dir.join("api-keys");
    let hash = analytics_edge::auth::hash_hex;
    std::fs::write(
        &keys,
        format!(
            "shop browser {}\nserver write {}\ndash read {}\n",
            hash(BROWSER_KEY),
            hash(WRITE_KEY),
            hash(READ_KEY)
        ),
    )?;
    let keys = keys.to_str().context("utf-8")?.to_owned();
    let (page_listener, page_port) = listener().await?;
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let command_args = [
        "--api-keys-file",
        &keys,
        "--cors-allow-origins",
        &page_origin,
        "--rate-limit-browser",
        "100",
    ];
    let debug = [("RUST_LOG", "debug")];
    let command_flags = Flags {
        args: &command_args,
        env: &debug,
    };
    let query_args = [QUERY_ARGS, &["--api-keys-file", &keys]].concat();
    let mut pipeline = Pipeline::start(
        &stack,
        PipelineOptions {
            command: command_flags,
            query: Flags::args(&query_args),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let front = stack.front_door(&[pipeline.command.addr()], &[pipeline.query.addr()])?;
    let f = front.addr();
    tokio::spawn(serve_page(page_listener, shop_page(&f)));

    direct_checks(&f, &page_origin).await?;

    let started = analytics_model::clock::now_ms().div_euclid(HOUR) * HOUR;
    let total = || totals(&f, started);
    let browse = |run: &'static str, signals: std::path::PathBuf| {
        let (playwright, chromium) = (playwright.clone(), chromium.clone());
        let page = format!("{page_origin}/");
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("node")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/tracker.mjs"))
                .env("PLAYWRIGHT_DIR", &playwright)
                .env("CHROMIUM_BIN", &chromium)
                .env("PAGE_URL", page)
                .env("RUN", run)
                .env("SIGNAL_DIR", signals)
                .output()
        })
    };

    // Run 1: one visitor, two page views, the last one closed at once.
    let out = browse("1", stack.dir.clone()).await??;
    let shown = outcome(&out)?;
    // Two users: the anonymous visitor, then the id the site gave it after the reload.
    let want1 = [2, shown[1], shown[0]];
    ensure!(
        want1 == [2, 5, 11],
        "the script did not do what it should: {shown:?}"
    );
    wait_totals(&total, want1, "run 1").await?;

    // Run 2: another visitor while the command is away for a while.
    let signals = stack.dir.join("signals");
    std::fs::create_dir_all(&signals)?;
    let run2 = browse("2", signals.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !signals.join("stop").exists() {
        ensure!(Instant::now() < deadline, "run 2 never loaded its page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let port = pipeline.command.port;
    pipeline.command.proc.kill9();
    tokio::time::sleep(Duration::from_secs(8)).await;
    pipeline.command = stack.service_on_with("command", port, command_flags)?;
    pipeline.command.wait_ready(Duration::from_secs(30)).await?;
    std::fs::write(signals.join("back"), "")?;
    let shown2 = outcome(&run2.await??)?;
    let want2 = [3, want1[1] + shown2[1], want1[2] + shown2[0]];
    ensure!(shown2 == [3, 2], "run 2 did {shown2:?}");
    wait_totals(&total, want2, "run 2, after the outage").await?;

    // No log holds the browser key: not the services' (debug level), not nginx's.
    tokio::time::sleep(Duration::from_secs(2)).await; // nginx flushes its log every second
    let access =
        std::fs::read_to_string(stack.dir.join(format!("nginx-{}/access.log", front.port)))?;
    ensure!(
        access.contains("query hidden"),
        "no beacon or key= request reached the access log"
    );
    for (what, text) in [
        ("the access log", access),
        ("the command's log", pipeline.command.proc.output()),
        ("the query's log", pipeline.query.proc.output()),
    ] {
        ensure!(!text.contains(BROWSER_KEY), "{what} holds the browser key");
        ensure!(!text.contains(WRITE_KEY), "{what} holds the write key");
    }
    Ok(())
}

/// A listener on a free port of its own: the page's origin.
async fn listener() -> Result<(tokio::net::TcpListener, u16)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    Ok((l, port))
}

/// A shop's page: the tracker from the front door, ten marked items far apart (one in view
/// at a time, none at the top).
fn shop_page(front: &str) -> String {
    let items: String = (0..10)
        .map(|i| format!("<div class=\"item\" id=\"item-{i}\" data-analytics=\"item-{i}\">item {i}</div><div class=\"gap\"></div>"))
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>shop</title>\
         <link rel=\"icon\" href=\"data:,\">\
         <script>history.scrollRestoration = \"manual\";</script>\
         <script src=\"http://{front}/t.js\" data-key=\"{BROWSER_KEY}\" defer></script>\
         <style>body{{margin:0}} .gap{{height:130vh}} .item{{height:40vh;background:#eee}}</style>\
         </head><body><div class=\"gap\"></div>{items}</body></html>"
    )
}

/// Serves `html` to every request (HTTP/1.1, one request per connection).
async fn serve_page(listener: tokio::net::TcpListener, html: String) {
    while let Ok((mut s, _)) = listener.accept().await {
        let html = html.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                html.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(html.as_bytes()).await;
        });
    }
}

/// What the browser script did ([impressions, clicks]), or why it failed.
fn outcome(out: &std::process::Output) -> Result<[u64; 2]> {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "the browser run failed:\n{text}");
    let v: serde_json::Value = serde_json::from_str(text.lines().next().context("no output")?)?;
    Ok([
        v["impressions"].as_u64().context("impressions")?,
        v["clicks"].as_u64().context("clicks")?,
    ])
}

/// The totals of the hours since `from` (two hours' worth), read with the dashboard's key.
async fn totals(front: &str, from: i64) -> Result<[u64; 3]> {
    let auth = format!("Bearer {READ_KEY}");
    let r = Client::connect(front)
        .await?
        .request(
            "GET",
            &format!("/analytics/total?from={from}&to={}", from + 2 * HOUR),
            &[("Authorization", &auth)],
        )
        .await?;
    ensure!(r.status == 200, "{} {}", r.status, r.body);
    Ok(parse_body(&r.body))
}

async fn wait_totals<F, Fut>(total: &F, want: [u64; 3], what: &str) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<[u64; 3]>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = total().await?;
        if got == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: totals {got:?}, shown and clicked {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The rules of keys and the script, over plain HTTP through the front door (events two
/// hours back, apart from the browser runs').
async fn direct_checks(front: &str, page: &str) -> Result<()> {
    let mut c = Client::connect(front).await?;
    let t = c.request("GET", "/t.js", &[]).await?;
    ensure!(
        t.status == 200 && t.body.contains("sendBeacon"),
        "t.js: {}",
        t.status
    );
    let etag = t.header("etag").context("no ETag")?.to_owned();
    ensure!(t.header("cache-control") == Some("public, max-age=300"));
    let again = c
        .request("GET", "/t.js", &[("If-None-Match", &etag)])
        .await?;
    ensure!(
        again.status == 304 && again.body.is_empty(),
        "revalidation: {}",
        again.status
    );

    let ts = analytics_model::clock::now_ms() - 2 * HOUR;
    let post =
        |key: &str, user: &str| format!("/analytics?timestamp={ts}&user={user}&click&key={key}");
    let origin = [("Origin", page)];
    let r = c
        .request("POST", &post(BROWSER_KEY, "direct"), &origin)
        .await?;
    ensure!(
        r.status == 204,
        "browser key as key=: {} {}",
        r.status,
        r.body
    );
    let r = c.request("POST", &post(BROWSER_KEY, "direct"), &[]).await?;
    ensure!(
        r.status == 403 && r.body.contains("--cors-allow-origins"),
        "without Origin: {} {}",
        r.status,
        r.body
    );
    let r = c
        .request(
            "POST",
            &post(BROWSER_KEY, "direct"),
            &[("Origin", "http://evil.example")],
        )
        .await?;
    ensure!(r.status == 403, "another origin: {}", r.status);
    let r = c
        .request("POST", &post(WRITE_KEY, "direct"), &origin)
        .await?;
    ensure!(
        r.status == 403 && r.body.contains("Authorization: Bearer"),
        "write key as key=: {} {}",
        r.status,
        r.body
    );
    let bearer = format!("Bearer {BROWSER_KEY}");
    let r = c
        .request(
            "GET",
            &format!("/analytics?timestamp={ts}"),
            &[("Authorization", &bearer)],
        )
        .await?;
    ensure!(r.status == 403, "the browser key reading: {}", r.status);
    let r = c
        .request(
            "GET",
            &format!("/analytics?timestamp={ts}&key={BROWSER_KEY}"),
            &[],
        )
        .await?;
    ensure!(
        r.status == 403,
        "the browser key reading as key=: {}",
        r.status
    );
    Ok(())
}
