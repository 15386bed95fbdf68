//! The deployment files, checked offline with real validators (installed by the project's
//! scripts from PyPI: kubernetes-validate, check-jsonschema with the compose-spec schema) and
//! against the code: `deploy/check_deploy_files.py` compares every flag, environment
//! variable, port, probe and topic they use with the services' `--help`. The generated files
//! (the compose front door's nginx.conf, the PrometheusRule) must match their sources.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validators() -> Result<PathBuf> {
    let cache = e2e::stack::home_cache();
    let default = cache.join("validators-k1.37.0-c0.39.0/bin");
    e2e::stack::tool("VALIDATORS_BIN_DIR", &[default])
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "{cmd:?} failed:\n{text}");
    Ok(text)
}

#[test]
fn compose_file_follows_the_compose_spec() -> Result<()> {
    let bin = validators()?;
    run(Command::new(bin.join("check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(root().join("deploy/compose/compose.yaml")))?;
    Ok(())
}

#[test]
fn kubernetes_manifests_are_valid() -> Result<()> {
    let bin = validators()?;
    let base = root().join("deploy/k8s/base");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&base)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.push(root().join("deploy/k8s/overlays/production/namespace.yaml"));
    files.sort();
    let text = run(Command::new(bin.join("kubernetes-validate"))
        .args(["--strict", "-k", "1.31.0"])
        .args(&files))?;
    for kind in [
        "deployment/command",
        "deployment/query",
        "deployment/processor",
        "deployment/materializer",
        "horizontalpodautoscaler/command",
        "horizontalpodautoscaler/query",
        "poddisruptionbudget/processor",
        "configmap/analytics-config",
        "secret/analytics-credentials",
    ] {
        ensure!(
            text.contains(&format!("passed for resource {kind} ")),
            "{kind} not validated:\n{text}"
        );
    }
    Ok(())
}

#[test]
fn deployment_files_agree_with_the_services() -> Result<()> {
    let bins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug");
    let bins = std::env::var_os("ANALYTICS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or(bins);
    let dir = std::env::temp_dir().join(format!("deploy-help-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for s in ["command", "processor", "materializer", "query"] {
        let help = run(Command::new(bins.join(s)).arg("--help"))?;
        std::fs::write(dir.join(format!("{s}.help")), help)?;
    }
    let result = run(Command::new(validators()?.join("python"))
        .arg(root().join("deploy/check_deploy_files.py"))
        .arg(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(())
}

#[test]
fn generated_files_match_their_sources() -> Result<()> {
    // The compose front door is the template rendered for compose.
    let template = std::fs::read_to_string(root().join("deploy/nginx/nginx.conf.template"))?;
    let rendered = template
        .replace("@PREFIX@", "/tmp/nginx")
        .replace("@LISTEN@", "0.0.0.0:8080")
        .replace("@COMMAND@", "server command:8081;")
        .replace("@QUERY@", "server query:8082;");
    let compose = std::fs::read_to_string(root().join("deploy/compose/nginx.conf"))?;
    let body: String = compose.lines().skip(2).map(|l| format!("{l}\n")).collect();
    ensure!(
        body == rendered,
        "deploy/compose/nginx.conf is not the rendered template: regenerate it (see its header)"
    );
    // The PrometheusRule holds exactly the rules of alerts.yml.
    let alerts = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml"))?;
    let groups = &alerts[alerts.find("groups:").context("groups")?..];
    let rule = std::fs::read_to_string(root().join("deploy/k8s/base/prometheusrule.yaml"))?;
    let spec = &rule[rule.find("spec:\n").context("spec")? + 6..];
    let dedented: String = spec
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    ensure!(
        dedented.trim_end() == groups.trim_end(),
        "deploy/k8s/base/prometheusrule.yaml does not hold deploy/prometheus/alerts.yml's rules"
    );
    Ok(())
}
