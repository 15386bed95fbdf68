"""Checks that the deployment files agree with the code (run by e2e/tests/deploy_files.rs).

Usage: python check_deploy_files.py HELP_DIR
HELP_DIR holds `<service>.help`, the `--help` output of each of the four services. Checks:
  - every environment variable the compose file and the ConfigMap give our services, and
    every `--flag` in their command lines, exists in that service's --help;
  - the ports they listen on are the services' default ports, and probes and healthchecks
    point at /readyz and /healthz;
  - topic names are the defaults, and the topics' policies and retentions are the ones the
    services would create (docs/architecture.md), in compose and in the Strimzi KafkaTopics.
Prints one line per problem and exits 1 if there is any.
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SERVICES = ["command", "processor", "materializer", "query"]
DAY = 86_400_000
HOUR = 3_600_000


def parse_help(text):
    """(flags, env vars, {flag: default}) of one --help output."""
    flags, envs, defaults = set(), set(), {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s+(?:-\w, )?(--[a-z0-9-]+)", line)
        if m:
            current = m.group(1)
            flags.add(current)
        m = re.search(r"\[env: ([A-Z0-9_]+)=", line)
        if m:
            envs.add(m.group(1))
        m = re.search(r"\[default: ([^\]]*)\]", line)
        if m and current:
            defaults[current] = m.group(1)
    return flags, envs, defaults


def main(help_dir):
    helps = {s: parse_help((pathlib.Path(help_dir) / f"{s}.help").read_text()) for s in SERVICES}
    problems = []
    port = {s: helps[s][2]["--listen"].rsplit(":", 1)[1] for s in SERVICES}
    topics = {
        "analytics.events": helps["processor"][2]["--events-topic"],
        "analytics.hourly": helps["processor"][2]["--hourly-topic"],
        "analytics.processor-changelog": helps["processor"][2]["--changelog-topic"],
        "analytics.dead-letter": helps["processor"][2]["--dead-letter-topic"],
    }
    for name, default in topics.items():
        if name != default:
            problems.append(f"topic {name} is not the default {default}")
    age = 24 * HOUR  # --max-event-age default, checked below
    if helps["processor"][2].get("--max-event-age") != "24h":
        problems.append("--max-event-age default changed: update the retentions in compose and k8s")
    want_topics = {
        "analytics.events": ("delete", age + 7 * DAY),
        "analytics.hourly": ("compact", None),
        "analytics.processor-changelog": ("delete", age + 2 * DAY),
        "analytics.dead-letter": ("delete", 30 * DAY),
    }

    def check_args(where, service, args):
        flags = helps[service][0]
        for a in args:
            if isinstance(a, str) and a.startswith("--") and a.split("=")[0] not in flags:
                problems.append(f"{where}: {service} has no flag {a}")
        if "--listen" in args:
            listen = args[args.index("--listen") + 1]
            if listen.rsplit(":", 1)[1] != port[service]:
                problems.append(f"{where}: {service} listens on {listen}, its default port is {port[service]}")

    def check_env(where, service, names):
        for n in names:
            if n not in helps[service][1]:
                problems.append(f"{where}: {service} has no environment variable {n}")

    # Compose.
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    for service in SERVICES:
        spec = compose["services"][service]
        cmd = spec["command"]
        if cmd[0] != service:
            problems.append(f"compose: {service} runs {cmd[0]}")
        check_args("compose", service, cmd[1:])
        check_env("compose", service, spec.get("environment", {}).keys())
        test = " ".join(spec["healthcheck"]["test"])
        if f"127.0.0.1:{port[service]}/readyz" not in test:
            problems.append(f"compose: {service}'s healthcheck is not its /readyz: {test}")
    script = compose["services"]["kafka-topics"]["command"][0]
    for name, (policy, retention) in want_topics.items():
        line = next((l for l in script.splitlines() if f"--topic {name} " in l), None)
        if line is None:
            problems.append(f"compose: topic {name} is not created")
            continue
        if "--partitions 12" not in line or f"cleanup.policy={policy}" not in line:
            problems.append(f"compose: topic {name}: {line.strip()}")
        if retention is not None and f"retention.ms={retention}" not in line:
            problems.append(f"compose: topic {name} should keep {retention} ms")

    # Kubernetes.
    config = yaml.safe_load((ROOT / "deploy/k8s/base/configmap.yaml").read_text())["data"]
    every_env = set().union(*(helps[s][1] for s in SERVICES))
    for n in config:
        if n not in every_env:
            problems.append(f"k8s ConfigMap: no service has the environment variable {n}")
    for service in SERVICES:
        docs = list(yaml.safe_load_all((ROOT / f"deploy/k8s/base/{service}.yaml").read_text()))
        deploy = next(d for d in docs if d["kind"] == "Deployment")
        pod = deploy["spec"]["template"]["spec"]
        c = pod["containers"][0]
        if c["args"][0] != service:
            problems.append(f"k8s: {service} runs {c['args'][0]}")
        check_args("k8s", service, c["args"][1:])
        check_env("k8s", service, [e["name"] for e in c.get("env", [])])
        if str(c["ports"][0]["containerPort"]) != port[service]:
            problems.append(f"k8s: {service}'s containerPort is not {port[service]}")
        if c["readinessProbe"]["httpGet"]["path"] != "/readyz" or c["livenessProbe"]["httpGet"]["path"] != "/healthz":
            problems.append(f"k8s: {service}'s probes are not /readyz and /healthz")
        if pod["terminationGracePeriodSeconds"] <= 10:
            problems.append(f"k8s: {service}'s terminationGracePeriodSeconds is not above --shutdown-timeout")
        sc = c["securityContext"]
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"k8s: {service} may escalate privileges or write its root filesystem")
        if pod["securityContext"].get("runAsNonRoot") is not True:
            problems.append(f"k8s: {service} may run as root")
    kafka = list(yaml.safe_load_all((ROOT / "deploy/k8s/base/kafka.yaml").read_text()))
    kt = {d["metadata"]["name"]: d["spec"] for d in kafka if d["kind"] == "KafkaTopic"}
    for name, (policy, retention) in want_topics.items():
        spec = kt.get(name)
        if spec is None:
            problems.append(f"k8s: no KafkaTopic {name}")
            continue
        if spec["partitions"] != 12 or spec["config"]["cleanup.policy"] != policy:
            problems.append(f"k8s: KafkaTopic {name}: {spec}")
        if retention is not None and spec["config"].get("retention.ms") != retention:
            problems.append(f"k8s: KafkaTopic {name} should keep {retention} ms")

    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
