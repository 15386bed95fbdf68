//! The deployment files, checked offline with real validators (installed by the project's
//! scripts from PyPI: kubernetes-validate, check-jsonschema with the compose-spec schema,
//! kubectl with its kustomize, the Prometheus Operator's CRD models) and against the code:
//! `deploy/check_k8s_manifests.py` validates every resource of the rendered production
//! overlay (Strimzi's against its release's API and Kafka versions: no registry carries its
//! CRDs), `deploy/check_deploy_files.py` compares every flag, environment variable, port,
//! probe and topic they use with the services' `--help`. The generated files (the compose
//! front door's nginx.conf, the PrometheusRule) must match their sources.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validators() -> Result<PathBuf> {
    let cache = e2e::stack::home_cache();
    let default = cache.join("validators-k1.37.0-c0.39.0-kc1.37.1-po0.80.1.0/bin");
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
    // The production overlay as `kubectl kustomize` renders it, every resource validated (an
    // unknown kind fails): Kubernetes kinds strictly against Kubernetes 1.31 and the newest
    // schemas, the ServiceMonitor and PrometheusRule against the Prometheus Operator's CRD
    // schemas, the Strimzi resources against Strimzi's API and supported Kafka versions, with
    // compose on the same Kafka line and docs/deploy.md naming the versions.
    let bin = validators()?;
    let text = run(Command::new(bin.join("python"))
        .arg(root().join("deploy/check_k8s_manifests.py"))
        .arg("--kubectl")
        .arg(bin.join("kubectl")))?;
    for resource in [
        "Namespace/hourly-analytics",
        "ConfigMap/analytics-config",
        "Secret/analytics-credentials",
        "Deployment/command",
        "Deployment/query",
        "Deployment/processor",
        "Deployment/materializer",
        "Service/command",
        "Service/query",
        "Service/processor",
        "Service/materializer",
        "HorizontalPodAutoscaler/command",
        "HorizontalPodAutoscaler/query",
        "PodDisruptionBudget/processor",
        "Kafka/analytics",
        "KafkaNodePool/brokers",
        "KafkaTopic/analytics.events",
        "KafkaTopic/analytics.hourly",
        "KafkaTopic/analytics.processor-changelog",
        "KafkaTopic/analytics.dead-letter",
        "ServiceMonitor/hourly-analytics",
        "PrometheusRule/hourly-analytics",
    ] {
        let line = format!("ok {resource} (");
        ensure!(
            text.lines().any(|l| l.starts_with(line.as_str())),
            "{resource} not validated:\n{text}"
        );
    }
    ensure!(
        text.lines()
            .any(|l| l.ends_with(" resource(s), 0 problem(s)")),
        "deploy/check_k8s_manifests.py did not finish cleanly:\n{text}"
    );
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
