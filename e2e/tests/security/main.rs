//! Access control and hardening against the real stack (broker, Redis with a password,
//! PostgreSQL with the writer and read-only roles): API keys and scopes, revocation on
//! SIGHUP, rate limits, the read-only role, HTTPS with a certificate made here, protected
//! mode, the 414 and the slow-header cut-off (the last four in [`tls`]).

mod tls;

use anyhow::{bail, ensure, Context, Result};
use e2e::http::{Client, Response};
use e2e::{Flags, Pipeline, PipelineOptions, Stack, QUERY_ARGS};
use std::path::Path;
use std::time::{Duration, Instant};

const WRITER: &str = "ak_writer_secret_for_tests";
const READER: &str = "ak_reader_secret_for_tests";
const BOTH: &str = "ak_both_secret_for_tests";

fn keys_file(path: &Path, keys: &[(&str, &str, &str)]) -> Result<()> {
    let text: String = keys
        .iter()
        .map(|(name, scopes, secret)| {
            format!(
                "{name} {scopes} {}\n",
                analytics_edge::auth::hash_hex(secret)
            )
        })
        .collect();
    std::fs::write(path, format!("# test keys\n\n{text}"))?;
    Ok(())
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

async fn call(addr: &str, method: &str, target: &str, key: Option<&str>) -> Result<Response> {
    let mut c = Client::connect(addr).await?;
    let auth = key.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    c.request(method, target, &headers).await
}

fn expect(r: &Response, status: u16, what: &str) -> Result<()> {
    ensure!(
        r.status == status,
        "{what}: expected {status}, got {} {:?}",
        r.status,
        r.body
    );
    Ok(())
}

/// Polls `GET /analytics` with `key` until the hour reads `want` (a minute at most).
async fn wait_for(addr: &str, key: &str, ts: i64, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let r = call(
            addr,
            "GET",
            &format!("/analytics?timestamp={ts}"),
            Some(key),
        )
        .await?;
        if r.status == 200 && r.body == want {
            return Ok(());
        }
        last = format!("{} {:?}", r.status, r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the hour never read {want:?}; last answer {last}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scopes_revocation_rate_limits_and_least_privilege_on_the_real_stack() -> Result<()> {
    let stack = Stack::start()?;
    let keys = stack.dir.join("api-keys");
    keys_file(
        &keys,
        &[
            ("writer", "write", WRITER),
            ("reader", "read", READER),
            ("both", "write,read", BOTH),
        ],
    )?;
    let keys_arg = keys.to_str().context("utf-8 path")?;
    let mut query_args = QUERY_ARGS.to_vec();
    query_args.extend(["--api-keys-file", keys_arg]);
    // The command and the query log at debug level: no secret may reach even those logs.
    let debug_logs = [("RUST_LOG", "debug")];
    let pipeline = Pipeline::start(
        &stack,
        PipelineOptions {
            command: Flags {
                args: &["--api-keys-file", keys_arg],
                env: &debug_logs,
            },
            query: Flags {
                args: &query_args,
                env: &debug_logs,
            },
            ..PipelineOptions::default()
        },
    )
    .await?;
    let Pipeline { command, query, .. } = &pipeline;
    let (c, q) = (command.addr(), query.addr());

    let now = analytics_model::clock::now_ms();
    let post = |user: &str| format!("/analytics?timestamp={now}&user={user}&click");
    let get = format!("/analytics?timestamp={now}");

    // 401: no key, an unknown key, another scheme; with the challenge and a one-line body.
    for (what, auth) in [
        ("no key", None),
        ("unknown key", Some("Bearer not-a-key")),
        ("basic auth", Some("Basic d3JpdGVyOnNlY3JldA==")),
    ] {
        for (addr, method, target) in [(&c, "POST", post("eve")), (&q, "GET", get.clone())] {
            let mut client = Client::connect(addr).await?;
            let headers: Vec<(&str, &str)> =
                auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
            let r = client.request(method, &target, &headers).await?;
            expect(&r, 401, what)?;
            ensure!(
                r.header("www-authenticate") == Some("Bearer"),
                "{what}: {r:?}"
            );
            ensure!(r.body.lines().count() == 1, "{what}: {:?}", r.body);
        }
    }
    let r = call(&q, "HEAD", &get, None).await?;
    expect(&r, 401, "HEAD without a key")?;

    // 403: a key without the scope.
    expect(
        &call(&c, "POST", &post("eve"), Some(READER)).await?,
        403,
        "read key POSTing",
    )?;
    expect(
        &call(&q, "GET", &get, Some(WRITER)).await?,
        403,
        "write key GETting",
    )?;

    // The operator endpoints stay open.
    for addr in [&c, &q] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            expect(&call(addr, "GET", path, None).await?, 200, path)?;
        }
    }

    // The right keys: 204 and 200, and nothing refused was counted.
    let mut writer = Client::connect(&c).await?;
    let w = bearer(WRITER);
    for user in ["alice", "bob"] {
        let r = writer
            .request("POST", &post(user), &[("Authorization", &w)])
            .await?;
        expect(&r, 204, "write key POSTing")?;
    }
    expect(
        &call(&c, "POST", &post("alice"), Some(BOTH)).await?,
        204,
        "write,read key",
    )?;
    wait_for(&q, READER, now, "unique_users,2\nclicks,3\nimpressions,0\n").await?;
    expect(
        &call(&q, "GET", &get, Some(BOTH)).await?,
        200,
        "write,read key GETting",
    )?;

    // Refusals by reason and key name, never by secret.
    let refused = |addr: String, series: &'static str| async move {
        e2e::metric(
            &addr,
            &format!("analytics_http_requests_refused_total{{{series}}}"),
        )
        .await
    };
    ensure!(refused(c.clone(), r#"key="",reason="unauthenticated""#).await? == 3.0);
    ensure!(refused(c.clone(), r#"key="reader",reason="forbidden""#).await? == 1.0);
    ensure!(refused(q.clone(), r#"key="",reason="unauthenticated""#).await? == 4.0);
    ensure!(refused(q.clone(), r#"key="writer",reason="forbidden""#).await? == 1.0);

    // Revocation: the writer key leaves the file; after SIGHUP it gets 401, on the
    // connection it already had open, while the other keys keep working.
    keys_file(
        &keys,
        &[("reader", "read", READER), ("both", "write,read", BOTH)],
    )?;
    command.proc.hangup();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = writer
            .request("POST", &post("carol"), &[("Authorization", &w)])
            .await
            .context("the open connection was dropped by the reload")?;
        if r.status == 401 {
            break;
        }
        expect(&r, 204, "writer key before the reload took effect")?;
        ensure!(Instant::now() < deadline, "the revoked key still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect(
        &call(&c, "POST", &post("dave"), Some(BOTH)).await?,
        204,
        "kept key",
    )?;
    ensure!(
        e2e::metric(
            &c,
            r#"analytics_config_reloads_total{result="ok",what="api_keys"}"#
        )
        .await?
            == 1.0
    );
    // A broken file is refused and the previous keys stay.
    std::fs::write(&keys, "both write,read nothex\n")?;
    command.proc.hangup();
    let deadline = Instant::now() + Duration::from_secs(30);
    while e2e::metric(&c, r#"analytics_config_reloads_total{result="error"}"#).await? < 1.0 {
        ensure!(Instant::now() < deadline, "the broken file was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect(
        &call(&c, "POST", &post("erin"), Some(BOTH)).await?,
        204,
        "after a bad reload",
    )?;

    // Rate limits: per key, 429 with Retry-After once the burst is spent.
    let mut limited_args = QUERY_ARGS.to_vec();
    limited_args.extend([
        "--api-keys-file",
        keys_arg,
        "--rate-limit",
        "1",
        "--rate-burst",
        "3",
    ]);
    keys_file(
        &keys,
        &[("reader", "read", READER), ("both", "write,read", BOTH)],
    )?;
    let limited = stack.service("query", &limited_args)?;
    limited.wait_ready(Duration::from_secs(60)).await?;
    let l = limited.addr();
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(call(&l, "GET", &get, Some(READER)).await?);
    }
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    // At one request per second a slow machine may earn a fourth token, never a fifth.
    let r = call(&l, "GET", &get, Some(READER)).await?;
    ensure!(
        statuses[..3] == [200, 200, 200] && (statuses[3] == 429 || r.status == 429),
        "burst of 3: {statuses:?} then {}",
        r.status
    );
    let refused_answer = answers
        .iter()
        .chain([&r])
        .find(|r| r.status == 429)
        .expect("one 429");
    let retry: u32 = refused_answer
        .header("retry-after")
        .context("429 without Retry-After")?
        .parse()?;
    ensure!(retry >= 1, "Retry-After {retry}");
    // Another key has its own bucket.
    expect(&call(&l, "GET", &get, Some(BOTH)).await?, 200, "other key")?;
    ensure!(
        e2e::metric(
            &l,
            r#"analytics_http_requests_refused_total{key="reader",reason="rate_limited"}"#
        )
        .await?
            >= 1.0
    );

    // Least privilege: the query reads as analytics_reader, which cannot write.
    let who = stack.psql(
        "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = 'analytics-query'",
    )?;
    ensure!(
        who.trim() == "analytics_reader",
        "query connects as {who:?}"
    );
    let who = stack.psql(
        "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = 'analytics-materializer'",
    )?;
    ensure!(
        who.trim() == "analytics_writer",
        "materializer connects as {who:?}"
    );
    let (reader, conn) =
        tokio_postgres::connect(&stack.reader_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let n: i64 = reader
        .query_one("SELECT count(*) FROM hourly_partials", &[])
        .await?
        .get(0);
    ensure!(n > 0, "the reader sees the partials");
    for sql in [
        "INSERT INTO hourly_partials (hour_ms, source_partition, clicks, impressions, unique_users, source_offset) VALUES (0, 0, 1, 1, 1, 0)",
        "UPDATE hourly_partials SET clicks = clicks + 1",
        "DELETE FROM hourly_partials",
        "CREATE TABLE intruder (x int)",
    ] {
        let err = reader
            .batch_execute(sql)
            .await
            .err()
            .with_context(|| format!("the reader could run {sql}"))?;
        let db = err.as_db_error().context("a database error")?;
        ensure!(
            db.message().contains("permission denied"),
            "{sql}: {}",
            db.message()
        );
    }

    // Redis has a password: a query without it is not ready.
    let port = e2e::free_port();
    let mut cmd = stack.service_command("query", &format!("127.0.0.1:{port}"), QUERY_ARGS)?;
    cmd.env(
        "REDIS_URL",
        format!("redis://127.0.0.1:{}/", stack.redis_port),
    );
    let _nopass = e2e::Proc::spawn(&format!("query-nopass-{port}"), cmd, &stack.dir)?;
    e2e::wait_port(port, Duration::from_secs(30), "query")?;
    let r = call(&format!("127.0.0.1:{port}"), "GET", "/readyz", None).await?;
    expect(&r, 503, "query without the Redis password")?;
    ensure!(r.body.contains("redis"), "{}", r.body);

    // No secret ever reaches the logs, even at debug level.
    for s in [&command, &query] {
        let out = s.proc.output();
        for secret in [WRITER, READER, BOTH, &stack.redis_password()] {
            ensure!(!out.contains(secret), "{} logged a secret", s.proc.name);
        }
        ensure!(
            out.contains("DEBUG"),
            "{} did not log at debug",
            s.proc.name
        );
    }
    Ok(())
}
