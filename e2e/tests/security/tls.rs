//! HTTPS with a certificate made here (and Redis over TLS), protected mode, the 414 and the
//! slow-header cut-off.

use crate::{call, expect};
use anyhow::{ensure, Context, Result};
use e2e::http::Client;
use e2e::{Service, Stack, QUERY_ARGS};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost`, written as PEM; its DER.
fn certificate(dir: &Path, name: &str) -> Result<(Vec<u8>, String, String)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    Ok((
        ck.cert.der().to_vec(),
        cert.to_str().context("utf-8")?.to_owned(),
        key.to_str().context("utf-8")?.to_owned(),
    ))
}

/// One HTTPS request to `addr` trusting only `ca_der`; the raw response and the
/// certificate the server presented.
async fn https_get(addr: &str, ca_der: &[u8], target: &str) -> Result<(String, Vec<u8>)> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no peer certificate")?
        .to_vec();
    tls.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok((out, presented))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_protected_mode_long_targets_and_slow_headers() -> Result<()> {
    let stack = Stack::start()?;
    let (der, cert, key) = certificate(&stack.dir, "first")?;
    let mut args = QUERY_ARGS.to_vec();
    args.extend(["--tls-cert", &cert, "--tls-key", &key]);
    let query = stack.service("query", &args)?;
    let q = query.addr();

    // HTTPS with a client that trusts the certificate made here.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (answer, presented) = https_get(&q, &der, "/readyz").await?;
        ensure!(presented == der);
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "never ready over HTTPS: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = analytics_model::clock::now_ms();
    let (answer, _) = https_get(&q, &der, &format!("/analytics?timestamp={now}")).await?;
    ensure!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("impressions,0\n"),
        "{answer}"
    );
    // Plain HTTP on the HTTPS port gets no answer.
    ensure!(call(&q, "GET", "/healthz", None).await.is_err());
    // A client that does not trust the certificate is refused.
    let (other_der, other_cert, other_key) = certificate(&stack.dir, "second")?;
    ensure!(https_get(&q, &other_der, "/healthz").await.is_err());
    // SIGHUP reloads the certificate: new connections see the new one.
    std::fs::copy(&other_cert, &cert)?;
    std::fs::copy(&other_key, &key)?;
    query.proc.hangup();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((answer, presented)) = https_get(&q, &other_der, "/healthz").await {
            ensure!(presented == other_der && answer.starts_with("HTTP/1.1 200"));
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Redis over TLS: `rediss://` with a password, trusting the certificate made here.
    let (_, redis_cert, redis_key) = certificate(&stack.dir, "redis")?;
    let tls_port = e2e::free_port();
    let redis_bin =
        std::env::var("REDIS_SERVER").unwrap_or_else(|_| "/usr/bin/redis-server".into());
    let mut cmd = std::process::Command::new(redis_bin);
    cmd.args(["--port", "0", "--tls-port", &tls_port.to_string()])
        .args(["--tls-cert-file", &redis_cert, "--tls-key-file", &redis_key])
        .args([
            "--tls-auth-clients",
            "no",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--requirepass", "tls-secret"])
        .current_dir(&stack.dir);
    let _tls_redis = e2e::Proc::spawn("redis-tls", cmd, &stack.dir)?;
    e2e::wait_port(tls_port, Duration::from_secs(10), "redis over TLS")?;
    let port = e2e::free_port();
    let mut cmd = stack.service_command("query", &format!("127.0.0.1:{port}"), QUERY_ARGS)?;
    cmd.env(
        "REDIS_URL",
        format!("rediss://:tls-secret@localhost:{tls_port}/"),
    )
    .env("SSL_CERT_FILE", &redis_cert);
    let over_tls = Service {
        port,
        proc: e2e::Proc::spawn(&format!("query-rediss-{port}"), cmd, &stack.dir)?,
    };
    over_tls.wait_ready(Duration::from_secs(60)).await?;
    let r = call(
        &over_tls.addr(),
        "GET",
        &format!("/analytics?timestamp={now}"),
        None,
    )
    .await?;
    expect(&r, 200, "query reading Redis over TLS")?;

    // Protected mode: no keys on a non-loopback address refuses to start, naming both ways out.
    let port = e2e::free_port();
    let cmd = stack.service_command("query", &format!("0.0.0.0:{port}"), QUERY_ARGS)?;
    let mut refused = e2e::Proc::spawn(&format!("query-open-{port}"), cmd, &stack.dir)?;
    let code = refused.wait_exit(Duration::from_secs(30));
    ensure!(code == Some(1), "exit code {code:?}: {}", refused.output());
    let out = refused.output();
    ensure!(
        out.contains("--api-keys-file") && out.contains("--insecure-no-auth"),
        "{out}"
    );
    ensure!(!out.contains("query listening"), "{out}");
    let port = e2e::free_port();
    let cmd = stack.service_command(
        "query",
        &format!("0.0.0.0:{port}"),
        &[QUERY_ARGS, &["--insecure-no-auth"]].concat(),
    )?;
    let insecure = Service {
        port,
        proc: e2e::Proc::spawn(&format!("query-insecure-{port}"), cmd, &stack.dir)?,
    };
    insecure.wait_ready(Duration::from_secs(60)).await?;

    // A request target beyond 8 KiB: 414; the connection stays usable.
    let plain = stack.service(
        "query",
        &[QUERY_ARGS, &["--header-read-timeout", "1s"]].concat(),
    )?;
    plain.wait_ready(Duration::from_secs(60)).await?;
    let p = plain.addr();
    let mut client = Client::connect(&p).await?;
    let long = format!("/analytics?timestamp={now}&pad={}", "x".repeat(9 * 1024));
    expect(
        &client.request("GET", &long, &[]).await?,
        414,
        "long target",
    )?;
    let short = format!("/analytics?timestamp={now}&pad={}", "x".repeat(7 * 1024));
    expect(
        &client.request("GET", &short, &[]).await?,
        200,
        "7 KiB target (unknown parameters are ignored by GET)",
    )?;
    // Headers beyond the fixed size: refused.
    let huge = "y".repeat(70 * 1024);
    let r = Client::connect(&p)
        .await?
        .request("GET", "/healthz", &[("X-Padding", &huge)])
        .await;
    ensure!(
        matches!(&r, Ok(r) if r.status == 431),
        "oversized headers: {r:?}"
    );

    // A client that never finishes its headers is disconnected (here after 1 s).
    let mut slow = tokio::net::TcpStream::connect(&p).await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let mut buf = [0u8; 256];
    // 8 s: far beyond the 1 s asked for, yet short of the 10 s default, so that the test
    // fails if the flag is ignored.
    let n = tokio::time::timeout(Duration::from_secs(8), slow.read(&mut buf))
        .await
        .context("a slow client was never cut off")?
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    ensure!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "slow client got {answer:?}"
    );
    // The same after a request on a keep-alive connection: the deadline restarts with each
    // answer, it is not only counted from the connection's start.
    let mut kept = tokio::net::TcpStream::connect(&p).await?;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    // The whole first answer (its body is "ok\n"), however many reads it takes.
    let mut first = Vec::new();
    while !first.ends_with(b"\r\n\r\nok\n") {
        let n = tokio::time::timeout(Duration::from_secs(8), kept.read(&mut buf))
            .await
            .context("the first answer never completed")??;
        ensure!(n > 0, "closed before the first answer: {first:?}");
        first.extend_from_slice(&buf[..n]);
    }
    ensure!(first.starts_with(b"HTTP/1.1 200"), "healthz: {first:?}");
    kept.write_all(b"GET /healthz HTTP/1.1\r\n").await?;
    let n = tokio::time::timeout(Duration::from_secs(8), kept.read(&mut buf))
        .await
        .context("a keep-alive client that stopped mid-head was never cut off")?
        .unwrap_or(0);
    ensure!(
        n == 0,
        "half a second head got {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // And the service still answers others.
    expect(
        &call(&p, "GET", "/healthz", None).await?,
        200,
        "after the slow client",
    )?;
    Ok(())
}
