//! The HTTP contract, `docs/openapi.yaml`, against the code: the set of paths and methods
//! must be exactly the routes command and query answer, each service must serve the document
//! as it is in the repository, and Schemathesis (installed by `make test`) fuzzes every
//! operation of a running command and query on the test stack with it.

use anyhow::{ensure, Context, Result};
use e2e::http::Client;
use e2e::{Stack, QUERY_ARGS};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

fn document() -> String {
    analytics_edge::openapi::DOCUMENT.to_owned()
}

/// `(path, METHOD)` of every operation of the document (read from its `paths:` block: paths
/// at two spaces of indentation, methods at four).
fn documented() -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in document().lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = format!("/{}", p.trim_end_matches(':'));
        } else if let Some(m) = line.strip_prefix("    ") {
            let m = m.trim_end_matches(':');
            if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&m) {
                ops.insert((path.clone(), m.to_uppercase()));
            }
        }
    }
    ops
}

/// `(path, METHOD)` of every route of command and query; `OPTIONS` for the routes with a
/// scope (the CORS preflight, answered when `--cors-allow-origins` is set).
fn implemented() -> BTreeSet<(String, String)> {
    use analytics_http::Route;
    let command = Route::<command::app::CommandApp>::all().map(|r| (r.path, r.methods, r.scope));
    let query = Route::<query::app::QueryApp>::all().map(|r| (r.path, r.methods, r.scope));
    command
        .chain(query)
        .flat_map(|(path, methods, scope)| {
            let preflight = scope.map(|_| "OPTIONS".to_owned());
            methods
                .iter()
                .map(|m| m.to_string())
                .chain(preflight)
                .map(move |m| (path.to_owned(), m))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_document_and_the_routes_agree() {
    let (doc, code) = (documented(), implemented());
    assert!(doc.len() >= 10, "parsed only {doc:?}");
    let only_doc: Vec<_> = doc.difference(&code).collect();
    let only_code: Vec<_> = code.difference(&doc).collect();
    assert!(
        only_doc.is_empty() && only_code.is_empty(),
        "docs/openapi.yaml and the code disagree:\n  documented, not answered: {only_doc:?}\n  answered, not documented: {only_code:?}"
    );
}

#[test]
fn the_compiled_document_is_the_file() {
    let file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml"))
            .unwrap();
    assert_eq!(file, document());
    assert!(document().starts_with("openapi: 3.1.0\n"));
}

/// Runs Schemathesis against `addr` for the operations tagged `tag`.
fn schemathesis(st: &Path, addr: &str, tag: &str, out: &Path) -> Result<()> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let started = Instant::now();
    let output = std::process::Command::new(st)
        .arg("run")
        .arg(&doc)
        .args(["--url", &format!("http://{addr}")])
        .args(["--include-tag", tag])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        .args(["--mode", "all", "--max-examples", "300", "--seed", "20261130"])
        // One worker: with two, Hypothesis parses lambdas' source in two threads at once and
        // CPython 3.11 keeps the `ast` module's recursion depth in state the threads share: a CI
        // run failed with "AST constructor recursion depth mismatch", a Python error, not a
        // finding about the services.
        .args(["--phases", "examples,coverage,fuzzing", "--workers", "1"])
        .args(["--generation-database", "none", "--no-color"])
        .arg("--report-dir")
        .arg(out)
        // Schemathesis keeps a cache in its working directory: the test's, not the checkout.
        .current_dir(out.parent().unwrap_or(out))
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env(
            "SCHEMATHESIS_HOOKS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("contract_hooks.py"),
        )
        .output()
        .with_context(|| format!("running {}", st.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "schemathesis ({tag}, {:.0} s):\n{text}",
        started.elapsed().as_secs_f64()
    );
    ensure!(
        output.status.success(),
        "Schemathesis found failures in the {tag} operations:\n{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_command_and_query() -> Result<()> {
    let st = e2e::stack::tool(
        "SCHEMATHESIS_BIN",
        &[e2e::stack::home_cache().join("schemathesis-4.32.5/bin/st")],
    )?;
    let stack = Stack::start()?;
    let command = stack.service("command", &[])?;
    let query = stack.service("query", QUERY_ARGS)?;
    e2e::all_ready(&[&command, &query]).await?;
    // Each service serves the document.
    for s in [&command, &query] {
        let r = Client::connect(&s.addr())
            .await?
            .request("GET", "/openapi.yaml", &[])
            .await?;
        ensure!(r.status == 200 && r.body == document());
        ensure!(r.header("content-type") == Some("application/yaml"));
    }
    let (c, q) = (command.addr(), query.addr());
    let dir = stack.dir.clone();
    let st2 = st.clone();
    let deadline = Duration::from_secs(300);
    let run = tokio::task::spawn_blocking(move || -> Result<()> {
        schemathesis(&st2, &c, "command", &dir.join("schemathesis-command"))?;
        schemathesis(&st2, &q, "query", &dir.join("schemathesis-query"))
    });
    tokio::time::timeout(deadline, run)
        .await
        .context("Schemathesis ran past five minutes")???;
    Ok(())
}
