"""Deployment files under ``ops/``: they parse, agree with each other, and name real metrics.

Metric names: the alert rules and the dashboard may only use series the service exports.
The reference is a scrape of the real service (``run_service`` in-process against the fake
Binance, driven with trades, a book and a ticker). prometheus_client writes ``# HELP`` and
``# TYPE`` for every family of the registry, also for labelled ones without samples yet
(e.g. ``collector_sequence_gaps_total`` before any gap), so the scrape's *families* are the
complete list of what the service declares, whatever traffic the test drove; the series
names follow from each family's type (``_total`` for counters, ``_bucket``/``_sum``/``_count``
for histograms). Label names come from the same registry (declared labels, so labels of
metrics without samples are known too).

YAML files are read with PyYAML (a test-only dependency).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import yaml  # type: ignore[import-untyped,unused-ignore]
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collector import healthcheck
from collector.config import CollectorSettings
from collector.metrics import Metrics
from collector.service import EXIT_OK
from collector.settings_check import load_settings, parse_settings
from tests.fakes.binance import FakeBinance, book_ticker_frame, depth20_frame, trade_frame
from tests.procs import ServiceProcess, clean_env, write_settings
from tests.test_http import fetch
from tests.test_service import TIME_US, GatedFake, service_settings, settle, start_service

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "ops"
ALERTS = OPS / "prometheus" / "alerts.yml"
ALERT_TESTS = sorted((OPS / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = OPS / "grafana" / "collector.json"
TIMEOUT = 20.0

# Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = frozenset({"instance", "job", "namespace", "pod", "service", "container"})
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc is not None]


# --------------------------------------------------------------------------- metric names


def series_names(family_name: str, family_type: str) -> set[str]:
    """The sample names a family of this type exposes."""
    suffixes = SUFFIXES.get(family_type, ("",))
    return {family_name + suffix for suffix in suffixes} | (
        {family_name} if family_type in ("gauge", "untyped", "unknown", "stateset") else set()
    )


def families_of(text: str) -> dict[str, str]:
    """{family name: type} of a Prometheus text exposition.

    The text-format parser reports a counter's or histogram's ``_created`` samples as a
    gauge family of their own; they belong to their family and are dropped here.
    """
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    return {
        name: kind
        for name, kind in families.items()
        if not (name.endswith("_created") and name.removesuffix("_created") in families)
    }


def label_names(registry: CollectorRegistry) -> dict[str, set[str]]:
    """{series name: label names} for every metric ``registry`` declares (samples or not)."""
    labels: dict[str, set[str]] = {}
    for family in registry.collect():
        names = series_names(family.name, family.type)
        for name in names:
            labels.setdefault(name, set())
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    # Labelled metrics without children have no samples: read the declared label names.
    for collector in list(registry._collector_to_names):
        declared = getattr(collector, "_labelnames", None)
        metric = getattr(collector, "_name", None)
        kind = getattr(collector, "_type", None)
        if declared is None or metric is None or kind is None:
            continue
        for series in series_names(metric, kind):
            labels.setdefault(series, set()).update(declared)
            if kind == "histogram" and series.endswith("_bucket"):
                labels[series].add("le")
    return labels


async def scrape_running_service(tmp_path: Path) -> str:
    """``/metrics`` of the real service after trades, a book and a ticker went through it."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            service = await start_service(nursery, service_settings(fake.url, tmp_path))
            await fake.wait_subscribed()
            frames = [trade_frame("btcusdt", i, 100.0 + i, 0.5, TIME_US + i, True) for i in (1, 2)]
            frames.append(depth20_frame("ethusdt", 5, [(1.0, 2.0)], [(1.1, 3.0)]))
            frames.append(book_ticker_frame("ethusdt", 6, 1.0, 2.0, 1.1, 3.0))
            for frame in frames:
                assert await fake.send(frame) == 1
            await settle()
            status, _, body = await fetch(service.port, "/metrics")
            assert status == 200
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()
    return body


_NAME_RE = re.compile(r"\b(collector_[A-Za-z0-9_]+)\b")
_MATCHERS_RE = re.compile(r"\b(collector_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER_LABEL_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def expressions() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard query and variable."""
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            yield f"alerts.yml {rule['alert']}", rule["expr"]
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"collector.json {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"collector.json ${variable['name']}", variable["definition"]


def check_expression(where: str, expr: str, labels: dict[str, set[str]]) -> list[str]:
    """Problems with one expression: unknown metric names, unknown label names."""
    problems = []
    used = set(_NAME_RE.findall(expr))
    if not used and "collector" not in expr:
        problems.append(f"{where}: uses no collector metric: {expr}")
    for name in sorted(used - labels.keys()):
        problems.append(f"{where}: {name} is not exported")
    for name, matchers in _MATCHERS_RE.findall(expr):
        for label in _MATCHER_LABEL_RE.findall(matchers):
            if name in labels and label not in labels[name] | TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {label!r}")
    available = set(TARGET_LABELS)
    for name in used & labels.keys():
        available |= labels[name]
    for grouping in _GROUPING_RE.findall(expr):
        for label in (s.strip() for s in grouping.split(",")):
            if label and label not in available:
                problems.append(f"{where}: grouping by {label!r}, which no metric used has")
    return problems


async def test_every_metric_in_alerts_and_dashboard_is_exported(tmp_path: Path) -> None:
    body = await scrape_running_service(tmp_path)
    scraped = families_of(body)
    # The scrape lists every family the service's registry declares.
    declared = Metrics().registry
    assert scraped == {f.name: f.type for f in declared.collect()}

    labels = label_names(declared)
    served = set().union(*(series_names(n, t) for n, t in scraped.items()))
    assert served == labels.keys()
    # Labels of collected-at-scrape-time families (channel fill) show only in samples.
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)

    problems = [p for where, expr in expressions() for p in check_expression(where, expr, labels)]
    assert not problems, "\n".join(problems)


def test_the_expression_check_catches_mistakes() -> None:
    labels = label_names(Metrics().registry)
    assert check_expression("t", "rate(collector_messages_received_total[5m])", labels) == []
    assert check_expression("t", "rate(collector_messages_received[5m])", labels) == [
        "t: collector_messages_received is not exported"
    ]
    assert check_expression("t", 'collector_messages_received_total{symbol="x"}', labels) == [
        "t: collector_messages_received_total has no label 'symbol'"
    ]
    assert check_expression(
        "t", "sum by (symbol) (rate(collector_messages_received_total[5m]))", labels
    ) == ["t: grouping by 'symbol', which no metric used has"]
    bucket = "histogram_quantile(0.9, sum by (le) (rate(collector_flush_seconds_bucket[5m])))"
    assert check_expression("t", bucket, labels) == []


def test_alert_rules_cover_the_issue_and_are_well_formed() -> None:
    rules = [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
    exprs = " ".join(rule["expr"] for rule in rules)
    for needed in (
        "collector_websocket_connected",  # connection down
        "collector_last_message_timestamp_seconds",  # no data for 5 minutes
        "collector_sequence_gaps_total",
        "collector_messages_dropped_total",
        "collector_upload_failures_total",
        "collector_upload_oldest_pending_age_seconds",
        "collector_disk_above_high_water",
        "collector_messages_discarded_total",
        "collector_last_data_timestamp_seconds",  # a silent stream
    ):
        assert needed in exprs, needed


_INCREASE_RE = re.compile(r"increase\((collector_[a-z_]+)\[(\d+[smh])\]\)")


def test_counter_alerts_fire_for_a_series_born_at_its_first_count() -> None:
    """An alert on a counter rising also counts a series that had no sample a window ago
    with its whole value (``x unless x offset W``, before the ``or``): increase() alone
    sees a series born at 1 as flat. Alerts on a counter *not* rising (``== 0``) need not."""
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            expr = " ".join(rule["expr"].split())
            for name, window in _INCREASE_RE.findall(expr):
                if "== 0" in expr:
                    continue
                born = f"({name} unless {name} offset {window}) or increase({name}[{window}])"
                assert born in expr, f"{rule['alert']}: {expr}"


def test_every_alert_has_promtool_unit_tests() -> None:
    alerts = {rule["alert"] for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]}
    tested: dict[str, int] = {}
    for path in ALERT_TESTS:
        spec = load_yaml(path)
        assert [(path.parent / f).resolve() for f in spec["rule_files"]] == [ALERTS]
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                if case["exp_alerts"]:  # a case where the alert fires
                    tested[case["alertname"]] = tested.get(case["alertname"], 0) + 1
    assert sorted(alerts - tested.keys()) == []
    assert sorted(tested.keys() - alerts) == []


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian: apt-get install prometheus); .ci/run installs it",
)
def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    """``promtool check rules`` and ``promtool test rules``: the unit tests evaluate every
    alert on input series, including counters created at 0 and born at their first count."""
    assert ALERT_TESTS
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", *map(str, ALERT_TESTS)]):
        result = subprocess.run(
            ["promtool", *args], capture_output=True, text=True, check=False, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_for_the_operator_matches_alerts_yml() -> None:
    (rule,) = load_yaml_all(OPS / "k8s" / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == load_yaml(ALERTS)


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    assert dashboard["uid"] == "collector"
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    text = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    for needed in (
        "collector_messages_received_total",
        "collector_rows_written_total",  # by exchange and type
        "collector_websocket_connected",
        "collector_sequence_gaps_total",
        "collector_messages_dropped_total",
        "collector_exchange_latency_seconds_bucket",
        "collector_parquet_bytes_written_total",
        "collector_upload_bytes_total",
        "collector_upload_pending_files",
    ):
        assert needed in text, needed


# --------------------------------------------------------------------------- compose


def test_compose_wires_collector_minio_prometheus_and_grafana() -> None:
    compose = load_yaml(OPS / "docker-compose.yml")
    services = compose["services"]
    assert {"collector", "minio", "createbucket", "prometheus", "grafana"} <= services.keys()
    collector = services["collector"]
    assert collector["build"] == {"context": "..", "dockerfile": "ops/Dockerfile"}
    assert collector["depends_on"]["createbucket"]["condition"] == (
        "service_completed_successfully"
    )
    # Every bind-mounted file exists (paths are relative to ops/).
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (OPS / source).exists(), f"{name}: {source}"
    mounts = dict(v.split(":")[:2] for v in collector["volumes"])
    settings_file = next(
        src for src, dst in mounts.items() if dst == collector["environment"]["CONFIG_PATH"]
    )
    settings, _ = load_settings(OPS / settings_file, {})
    assert settings.storage.mode != "local"
    assert settings.aws.endpoint_url == "http://minio:9000"
    assert f"local/{settings.aws.bucket}" in " ".join(services["createbucket"]["command"])
    grace = int(collector["stop_grace_period"].rstrip("s"))
    assert grace > settings.collector.shutdown_timeout_secs
    # The live outlets point at the compose file's Kafka and Redis.
    assert settings.kafka.enabled
    assert settings.redis.enabled
    kafka_host = settings.kafka.bootstrap_servers.split(":")[0]
    assert kafka_host in services
    assert (
        f"PLAINTEXT://{settings.kafka.bootstrap_servers}"
        in (services[kafka_host]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    )
    assert urlsplit(settings.redis.url).hostname in services
    assert {"kafka", "redis"} <= collector["depends_on"].keys()

    prometheus = load_yaml(OPS / "prometheus" / "prometheus.yml")
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "collector"]
    port = settings.collector.metrics_port
    assert job["static_configs"][0]["targets"] == [f"collector:{port}"]
    prom_mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert prom_mounts["./prometheus/alerts.yml"] in prometheus["rule_files"]

    grafana_mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    provider = load_yaml(OPS / "grafana" / "provisioning" / "dashboards" / "collector.yml")
    dashboard_dir = provider["providers"][0]["options"]["path"]
    assert grafana_mounts["./grafana/collector.json"] == f"{dashboard_dir}/collector.json"
    (source,) = load_yaml(OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"


# --------------------------------------------------------------------------- kubernetes


def k8s_objects() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((OPS / "k8s").glob("*.yaml")):
        for doc in load_yaml_all(path):
            objects[doc["kind"]] = doc
    return objects


def test_kubernetes_statefulset() -> None:
    objects = k8s_objects()
    sts = objects["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}

    config_map = objects["ConfigMap"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "settings"]
    config_path = Path(env["CONFIG_PATH"]["value"])
    assert config_path.parent == Path(mount["mountPath"])
    settings = parse_settings(tomllib.loads(config_map["data"][config_path.name]), "configmap")
    assert settings.storage.mode != "local"
    assert settings.aws.home_server_name is None  # every shard writes the same layout

    assert pod["terminationGracePeriodSeconds"] > settings.collector.shutdown_timeout_secs
    port = settings.collector.metrics_port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == port

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["key"] == key
        assert "value" not in env[key]
    shard = env["COLLECTOR_SHARD"]["value"]
    assert shard == f"auto/{sts['spec']['replicas']}"

    (claim,) = sts["spec"]["volumeClaimTemplates"]
    data_mount = next(
        m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]
    )
    assert data_mount["mountPath"] == env["COLLECTOR__STORAGE__DATA_DIR"]["value"]
    assert pod["securityContext"]["runAsNonRoot"] is True

    service = objects["Service"]
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)

    monitor = objects["ServiceMonitor"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "http"

    secret = objects["Secret"]
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomization_builds() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(OPS / "k8s")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc)
    assert kinds == ["ConfigMap", "Service", "StatefulSet"]


# --------------------------------------------------------------------------- systemd


def unit_entries(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> values (keys such as Environment= repeat)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_systemd_unit() -> None:
    unit = unit_entries(OPS / "systemd" / "collector.service")
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.KillSignal"] == ["SIGTERM"]
    assert unit["Service.User"][0] not in ("root", "0")
    assert unit["Service.StateDirectory"] == ["collector"]
    assert all(v.startswith("-") for v in unit["Service.EnvironmentFile"])  # optional
    assert seconds(unit["Service.TimeoutStopSec"][0]) > CollectorSettings().shutdown_timeout_secs
    assert unit["Service.RestartPreventExitStatus"] == ["2"]  # bad settings: no restart loop
    env = dict(v.split("=", 1) for v in unit["Service.Environment"])
    assert env["COLLECTOR__STORAGE__DATA_DIR"].startswith("/var/lib/collector/")
    command = shlex.split(unit["Service.ExecStart"][0])
    assert command[1:] == ["-m", "collector", "run"]


# --------------------------------------------------------------------------- the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (OPS / "Dockerfile").read_text("utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def exec_form(instructions: list[tuple[str, str]], name: str) -> list[str]:
    (args,) = [rest for word, rest in instructions if word == name]
    if name == "HEALTHCHECK":
        args = args[args.index("CMD ") + 4 :]
    command = json.loads(args)
    assert isinstance(command, list)
    return [str(part) for part in command]


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    words = [word for word, _ in instructions]
    assert words.count("FROM") >= 2, "multi-stage"
    user = [rest for word, rest in instructions if word == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    assert exec_form(instructions, "ENTRYPOINT") == ["python", "-m", "collector"]
    assert exec_form(instructions, "CMD") == ["run"]
    health = exec_form(instructions, "HEALTHCHECK")
    assert health[:3] == ["python", "-m", "collector.healthcheck"]
    commands = " ".join(rest for _, rest in instructions)
    assert "curl" not in commands
    assert "wget" not in commands
    env = " ".join(rest for word, rest in instructions if word == "ENV")
    assert "COLLECTOR__STORAGE__DATA_DIR=/data" in env
    assert ("VOLUME", '["/data"]') in instructions
    # The build context is the repository root; BuildKit reads ops/Dockerfile.dockerignore.
    ignore = (OPS / "Dockerfile.dockerignore").read_text("utf-8").splitlines()
    for word, rest in instructions:
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert f"!{source.rstrip('/')}" in {i.rstrip("/") for i in ignore}, source


def run_form(command: list[str]) -> list[str]:
    """An exec-form command of the image, run with this interpreter."""
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


@pytest.mark.slow
async def test_image_entrypoint_and_healthcheck_commands_work(tmp_path: Path) -> None:
    """ENTRYPOINT + CMD and HEALTHCHECK of ops/Dockerfile, run as the image would run them."""
    instructions = dockerfile_instructions()
    entry = exec_form(instructions, "ENTRYPOINT") + exec_form(instructions, "CMD")
    probe = run_form(exec_form(instructions, "HEALTHCHECK"))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            config = write_settings(
                tmp_path / "settings.toml", data_dir=tmp_path / "ignored", base_url=fake.url
            )
            data = tmp_path / "volume"
            env = {
                **clean_env(),
                "CONFIG_PATH": str(config),
                "COLLECTOR__STORAGE__DATA_DIR": str(data),
            }
            out, err = tmp_path / "service.stdout", tmp_path / "service.stderr"
            with out.open("wb") as stdout, err.open("wb") as stderr:
                process = await trio.lowlevel.open_process(
                    run_form(entry), cwd=tmp_path, env=env, stdout=stdout, stderr=stderr
                )
            service = ServiceProcess(process, out, err)
            try:
                port = await service.wait_started()
                url = f"http://127.0.0.1:{port}"
                probe_env = {**clean_env(), healthcheck.ENV_URL: f"{url}/health"}
                result = await trio.run_process(probe, env=probe_env, check=False)
                assert result.returncode == 0
                await service.wait_ready()
                ready = await trio.run_process(
                    [*probe, f"{url}/ready"], env=clean_env(), check=False
                )
                assert ready.returncode == 0
                service.send_signal(signal.SIGTERM)
                assert await service.wait_exit() == 0, service.describe()
                closed = await trio.run_process(probe, env=probe_env, check=False)
                assert closed.returncode == 1
            except BaseException:
                print(service.describe())
                raise
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.wait()
            nursery.cancel_scope.cancel()
    assert data.is_dir(), "the data directory comes from COLLECTOR__STORAGE__DATA_DIR"
    assert not (tmp_path / "ignored").exists()


# --------------------------------------------------------------------------- healthcheck


def run_healthcheck(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.healthcheck", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**clean_env(), **(env or {})},
        timeout=30,
    )


async def test_healthcheck_against_a_running_service(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = FakeBinance()
            await nursery.start(fake.run)
            service = await start_service(nursery, service_settings(fake.url, tmp_path))
            url = f"http://127.0.0.1:{service.port}"
            healthy = await trio.to_thread.run_sync(run_healthcheck, f"{url}/health")
            assert healthy.returncode == 0, healthy.stderr
            assert "HTTP 200" in healthy.stdout
            by_env = await trio.to_thread.run_sync(
                lambda: run_healthcheck(env={healthcheck.ENV_PORT: str(service.port)})
            )
            assert by_env.returncode == 0, by_env.stderr
            missing = await trio.to_thread.run_sync(run_healthcheck, f"{url}/nothing")
            assert missing.returncode == 1
            assert "HTTP 404" in missing.stderr
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()
    closed = run_healthcheck(f"{url}/health", "--timeout", "2")
    assert closed.returncode == 1
    assert closed.stderr.startswith(f"{url}/health: ")


async def test_healthcheck_ready_is_503_until_subscribed(tmp_path: Path) -> None:
    """/ready answers 503 while a connection has not subscribed: the probe exits 1."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = GatedFake()
            await nursery.start(fake.run)
            service = await start_service(nursery, service_settings(fake.url, tmp_path))
            await fake.wait_connected()
            url = f"http://127.0.0.1:{service.port}/ready"
            waiting = await trio.to_thread.run_sync(run_healthcheck, url)
            fake.gate.set()
            await fake.wait_subscribed()
            await settle()
            ready = await trio.to_thread.run_sync(run_healthcheck, url)
            assert await service.stop() == EXIT_OK
            nursery.cancel_scope.cancel()
    assert waiting.returncode == 1
    assert "HTTP 503" in waiting.stderr
    assert ready.returncode == 0, ready.stderr


def test_healthcheck_default_url() -> None:
    assert healthcheck.default_url({}) == "http://127.0.0.1:8000/health"
    assert healthcheck.default_url({healthcheck.ENV_PORT: "9100"}) == (
        "http://127.0.0.1:9100/health"
    )
    assert healthcheck.default_url({healthcheck.ENV_URL: "http://x:1/ready"}) == "http://x:1/ready"


def test_healthcheck_quiet_and_bad_urls(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["not a url", "--quiet"], env={}) == 1
    assert capsys.readouterr() == ("", "")
    assert healthcheck.main(["http://127.0.0.1:1/health", "--timeout", "1"], env={}) == 1
    assert "127.0.0.1:1" in capsys.readouterr().err


def test_healthcheck_imports_only_the_standard_library() -> None:
    """It runs every 30 s in the container: it must not import the service."""
    code = (
        "import sys, collector.healthcheck; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'quart', 'hypercorn', 'pyarrow', 'prometheus_client', 'msgspec')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_sharding_alerts_fire_as_their_promtool_tests_say() -> None:
    result = subprocess.run(
        ["promtool", "test", "rules", str(OPS / "prometheus" / "tests" / "sharding.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
