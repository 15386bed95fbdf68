//! The analytics page in a real browser: Debian's Chromium, headless, driven by
//! playwright-core (`e2e/browser/page.mjs`), against the test stack with known data. The page
//! loads without console errors or requests to another origin, the table shows the posted
//! hour exactly (and the click-through rate), an event posted while it is open appears after
//! the next refresh, seven days are 168 rows, the range's exact totals (distinct users over
//! 24 hours) above them, day and week rows in UTC and in Paris time, a browser in
//! `Asia/Kolkata` falling back to UTC with a note, it fits 320 px, and with keys it asks for
//! a read key and explains a refused one. The screenshot goes to `target/e2e-output/dashboard.png`
//! (and to `docs/dashboard.png` with `DASHBOARD_PNG=docs/dashboard.png`).

use anyhow::{ensure, Context, Result};
use e2e::workload::{post_recorded, wait_exact, Post, Truth, HOUR};
use e2e::{Pipeline, PipelineOptions, Stack, QUERY_ARGS};
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_hours_in_a_real_browser() -> Result<()> {
    let cache = e2e::stack::home_cache();
    let playwright = e2e::stack::tool("PLAYWRIGHT_DIR", &[cache.join("playwright-core-1.56.0")])?;
    let chromium = e2e::stack::tool("CHROMIUM_BIN", &["/usr/bin/chromium".into()])?;
    let stack = Stack::start()?;
    let keys = stack.dir.join("api-keys");
    std::fs::write(
        &keys,
        format!(
            "reader read {}\nwriter write {}\n",
            analytics_edge::auth::hash_hex("page-read-key"),
            analytics_edge::auth::hash_hex("page-write-key")
        ),
    )?;
    let pipeline = Pipeline::spawn(&stack, PipelineOptions::default())?;
    let keyed = stack.service(
        "query",
        &[
            QUERY_ARGS,
            &["--api-keys-file", keys.to_str().context("utf-8")?],
        ]
        .concat(),
    )?;
    let mut services = pipeline.services();
    services.push(&keyed);
    e2e::all_ready(&services).await?;
    let (command, query) = (&pipeline.command, &pipeline.query);

    // Known data: 3 users in the current hour (4 clicks, 3 impressions), some two hours back.
    let now = analytics_model::clock::now_ms();
    let h0 = now.div_euclid(HOUR) * HOUR;
    let ts = h0 + (now - h0) / 2;
    let post = |user: &str, click: bool, ts: i64| Post {
        ts,
        user: user.into(),
        click,
        id: None,
    };
    let posts = vec![
        post("ann", true, ts),
        post("ann", true, ts),
        post("bo", true, ts),
        post("cy", true, ts),
        post("bo", false, ts),
        post("cy", false, ts),
        post("cy", false, ts),
        post("dee", true, h0 - 2 * HOUR + 5),
    ];
    let mut truth = Truth::default();
    post_recorded(&command.addr(), &posts, 1, &mut truth).await?;
    wait_exact(
        &query.addr(),
        &truth,
        &[h0, h0 - 2 * HOUR],
        Duration::from_secs(60),
        "seed data",
    )
    .await?;
    let t = truth.totals(h0);
    let expect = serde_json::json!({
        "hour": analytics_model::hour::format_rfc3339(h0),
        "unique_users": t[0],
        "clicks": t[1],
        "impressions": t[2],
    });

    let day = truth.span(h0 - 23 * HOUR, h0 + HOUR);
    let expect_total = serde_json::json!({
        "unique_users": day[0],
        "clicks": day[1],
        "impressions": day[2],
    });

    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-output");
    std::fs::create_dir_all(&out_dir)?;
    let shot = out_dir.join("dashboard.png");
    let output = tokio::task::spawn_blocking({
        let (q, c, k) = (query.addr(), command.addr(), keyed.addr());
        let shot = shot.clone();
        move || {
            std::process::Command::new("node")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/page.mjs"))
                .env("PLAYWRIGHT_DIR", &playwright)
                .env("CHROMIUM_BIN", &chromium)
                .env("PAGE_URL", format!("http://{q}/"))
                .env("COMMAND_URL", format!("http://{c}"))
                .env("KEYED_URL", format!("http://{k}/"))
                .env("READ_KEY", "page-read-key")
                .env("WRITE_KEY", "page-write-key")
                .env("EXPECT", expect.to_string())
                .env("EXPECT_TOTAL", expect_total.to_string())
                .env("NEW_USER", "page-new-user")
                .env("SCREENSHOT", &shot)
                .output()
        }
    })
    .await?
    .context("running node")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    ensure!(output.status.success(), "the browser test failed:\n{text}");
    ensure!(std::fs::metadata(&shot)?.len() > 10_000, "no screenshot");
    if let Some(dest) = std::env::var_os("DASHBOARD_PNG") {
        std::fs::copy(
            &shot,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dest),
        )?;
    }
    Ok(())
}
