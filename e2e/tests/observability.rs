//! Runs a real Prometheus against the four services under a short load and evaluates every
//! expression of the Grafana dashboard and of the alert rules through its HTTP API: each must
//! return data. Also checks the rule file with `promtool`. Skipped, loudly, only when the
//! `prometheus` binary is not installed.

use anyhow::{anyhow, bail, ensure, Context, Result};
use e2e::http::Client;
use e2e::workload::percent_encode;
use e2e::{free_port, wait_port, Flags, Pipeline, PipelineOptions, Proc, Stack};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

/// Every `expr` of the dashboard's panels.
fn dashboard_exprs() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/dashboards/analytics.json"))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = Vec::new();
    for panel in v["panels"].as_array().context("panels")? {
        for t in panel["targets"].as_array().context("targets")? {
            out.push(t["expr"].as_str().context("expr")?.to_owned());
        }
    }
    Ok(out)
}

/// The query part of every alert: `expr: <query> <op> <threshold>` with the comparison removed.
fn alert_queries() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(expr) = line.trim().strip_prefix("expr:") else {
            continue;
        };
        let expr = expr.trim();
        let query = [" == ", " != ", " >= ", " <= ", " > ", " < "]
            .iter()
            .filter_map(|op| expr.rsplit_once(op))
            .filter(|(_, threshold)| threshold.trim().parse::<f64>().is_ok())
            .map(|(q, _)| q.trim().to_owned())
            .max_by_key(String::len)
            .with_context(|| format!("alert expr without a trailing numeric comparison: {expr}"))?;
        out.push(query);
    }
    ensure!(!out.is_empty(), "no alert expressions found");
    Ok(out)
}

/// POSTs (some late, a few rejected) and GETs, 20 of each every 100 ms, until `stop`.
async fn post_and_get(command: String, query: String, stop: Arc<AtomicBool>) -> Result<()> {
    let now = analytics_model::clock::now_ms();
    let mut post = Client::connect(&command).await?;
    let mut get = Client::connect(&query).await?;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..20 {
            i += 1;
            let kind = if i % 3 == 0 { "click" } else { "impression" };
            let ts = if i % 10 == 0 {
                now - 2 * 3_600_000
            } else {
                now
            };
            let r = post
                .request(
                    "POST",
                    &format!("/analytics?timestamp={ts}&user=u{}&{kind}", i % 97),
                    &[],
                )
                .await?;
            ensure!(r.status == 204, "POST answered {}", r.status);
            get.request("GET", &format!("/analytics?timestamp={ts}"), &[])
                .await?;
        }
        post.request("POST", "/analytics?timestamp=x&user=u&click", &[])
            .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn prom_query(addr: &str, expr: &str) -> Result<usize> {
    let mut c = Client::connect(addr).await?;
    let r = c
        .request(
            "GET",
            &format!("/api/v1/query?query={}", percent_encode(expr)),
            &[],
        )
        .await?;
    let v: serde_json::Value = serde_json::from_str(&r.body).with_context(|| r.body.clone())?;
    if v["status"] != "success" {
        bail!("{expr}: {}", r.body);
    }
    Ok(v["data"]["result"].as_array().map(Vec::len).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_returns_data() -> Result<()> {
    let Some(prometheus) = std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .or_else(|| which("prometheus"))
    else {
        eprintln!("\n!!!!!!!! SKIPPED: the prometheus binary is not installed (apt-get install prometheus) !!!!!!!!\n");
        return Ok(());
    };
    let promtool = prometheus.with_file_name("promtool");
    let st = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(repo().join("deploy/prometheus/alerts.yml"))
        .status()
        .context("running promtool")?;
    ensure!(st.success(), "promtool check rules failed");

    let stack = Stack::start()?;
    // The services' own defaults (no test flags), but for frequent flushes.
    let Pipeline {
        command,
        processor,
        materializer,
        query,
        ..
    } = Pipeline::start(
        &stack,
        PipelineOptions {
            processor: Flags::args(&["--flush-interval", "100ms"]),
            query: Flags::args(&[]),
            ..PipelineOptions::default()
        },
    )
    .await?;

    // Prometheus scraping the four services every second, with the project's alert rules.
    let prom_port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{}",
        repo().join("deploy/prometheus/alerts.yml").canonicalize()?.display(),
        [("command", &command), ("query", &query), ("processor", &processor), ("materializer", &materializer)]
            .iter()
            .map(|(job, s)| format!("  - job_name: {job}\n    static_configs:\n      - targets: [\"{}\"]\n", s.addr()))
            .collect::<String>()
    );
    let config_path = stack.dir.join("prometheus.yml");
    std::fs::write(&config_path, config)?;
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            stack.dir.join("prom-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let _prom = Proc::spawn("prometheus", cmd, &stack.dir)?;
    wait_port(prom_port, Duration::from_secs(30), "prometheus")?;
    let prom_addr = format!("127.0.0.1:{prom_port}");

    let exprs: Vec<String> = dashboard_exprs()?
        .into_iter()
        .chain(alert_queries()?)
        .collect();
    ensure!(
        exprs.len() > 20,
        "expected the dashboard and alert expressions, found {}",
        exprs.len()
    );

    // Load until Prometheus has scraped enough of it for every expression to return data:
    // rates and histograms need two scrapes of it, the consumers' lag statistics come every
    // 5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(post_and_get(command.addr(), query.addr(), stop.clone()));
    let (exprs, prom) = (&exprs, &prom_addr);
    let every_expression = e2e::wait_for(
        "every dashboard and alert expression returns data",
        Duration::from_secs(90),
        || async move {
            let mut empty = Vec::new();
            for expr in exprs {
                if prom_query(prom, expr).await? == 0 {
                    empty.push(expr.as_str());
                }
            }
            if empty.is_empty() {
                Ok(Some(()))
            } else {
                Err(anyhow!("expressions without data:\n{}", empty.join("\n")))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await?.context("the load on the services")?;
    every_expression?;
    ensure!(
        prom_query(&prom_addr, "up == 1").await? == 4,
        "all four services scraped"
    );
    Ok(())
}
