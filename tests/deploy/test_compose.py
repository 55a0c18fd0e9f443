"""docker-compose.yml, the Prometheus and Grafana files it mounts, and the Dockerfiles are consistent.

No Docker engine is needed: the files are parsed and cross-checked, not built or run."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
REPLICAS = ("lstm-a", "lstm-b")
HISTOGRAMS = ("request_duration_seconds", "queue_wait_seconds", "inference_seconds", "batch_size")
METRICS = {
    "lstm_requests_total",
    "lstm_queue_depth",
    "lstm_sessions_live",
    "lstm_sessions_created_total",
    "lstm_sessions_expired_total",
    "lstm_sessions_deleted_total",
    "lstm_steps_total",
    "lstm_model_info",
} | {f"lstm_{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
# Grafana's variables, as Prometheus would see them once Grafana has filled them in
GRAFANA_VARS = {"$__rate_interval": "1m", "$model": ".*"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dashboard_exprs() -> list[str]:
    """Every query of the dashboard (panels and variables) as the PromQL Prometheus receives."""
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "lstm.json").read_text())
    # label_values(metric, label) is Grafana's: it asks Prometheus for the series of `metric`
    exprs = [re.sub(r"^label_values\((.+),\s*\w+\)$", r"\1", v["query"]["query"]) for v in dash["templating"]["list"]]
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        exprs += [t["expr"] for t in panel["targets"]]
    for var, value in GRAFANA_VARS.items():
        exprs = [e.replace(var, value) for e in exprs]
    return exprs


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers left after removing strings, label
    matchers, ranges, grouping clauses, function calls and keywords."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"e\d*|inf|nan", n, re.I)}


def test_services_and_replicas():
    services = compose()["services"]
    assert set(services) == {*REPLICAS, "lstm-single", "redis", "prometheus", "grafana"}
    # HTTP on 8000/8100 and gRPC on 8001/8101 unless the *_PORT variables say otherwise (the compose test picks free ones)
    assert [services[r]["ports"] for r in REPLICAS] == [
        ["${LSTM_A_PORT:-8000}:8000", "${LSTM_A_GRPC_PORT:-8001}:8001"],
        ["${LSTM_B_PORT:-8100}:8000", "${LSTM_B_GRPC_PORT:-8101}:8001"],
    ]
    for r in REPLICAS:
        s = services[r]
        assert s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert s["environment"]["LSTM_SESSION_STORE"] == "redis"
        assert s["environment"]["LSTM_REDIS_URL"] == "redis://redis:6379/0"
        assert s["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/v2/health/" in " ".join(s["healthcheck"]["test"])
    assert services["redis"]["image"].startswith("redis:7")
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_the_single_replica_keeps_sessions_in_a_volume_and_starts_only_on_request():
    c = compose()
    single = c["services"]["lstm-single"]
    assert single["profiles"] == ["single"] and single["depends_on"] == []
    env = single["environment"]
    assert env["LSTM_SESSION_STORE"] == "memory"
    (volume,) = single["volumes"]
    name, path = volume.split(":")
    assert name in c["volumes"] and env["LSTM_STATE_DIR"] == path == "/var/lib/lstm"
    assert "chown 10001:10001 /var/lib/lstm" in (DEPLOY / "Dockerfile").read_text(), "a new volume is writable"
    # SIGTERM saves the sessions: the grace period must cover the drain
    assert int(single["stop_grace_period"].removesuffix("s")) > float(env["LSTM_DRAIN_TIMEOUT_S"])


def test_every_referenced_path_exists():
    mounts: dict[str, Path] = {}  # container path -> host path
    for name, s in compose()["services"].items():
        if "build" in s:
            context = ROOT / s["build"]["context"]
            assert (context / s["build"]["dockerfile"]).is_file(), name
        for volume in s.get("volumes", []):
            host, container = volume.split(":")[:2]
            if host in compose().get("volumes", {}):  # a named volume
                continue
            assert host.startswith("./"), f"{name}: {volume} is not a bind mount of a repository path"
            assert (ROOT / host).exists(), f"{name}: {host} does not exist"
            mounts[container] = ROOT / host
    assert mounts["/etc/prometheus/prometheus.yml"] == ROOT / "deploy/prometheus/prometheus.yml"
    provisioning = mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(d["type"], d["url"]) for d in datasources] == [("prometheus", "http://prometheus:9090")]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "lstm.yml").read_text())["providers"]
    assert (mounts[provider["options"]["path"]] / "lstm.json").is_file()


def test_prometheus_scrapes_both_replicas():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "lstm-serving"]
    assert job["scrape_interval"] == "5s" and job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{r}:8000" for r in REPLICAS}


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (scripts/install-tools.sh, run by make test, installs it)",
)
def test_promtool_accepts_the_config_and_every_dashboard_query(tmp_path):
    subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")], check=True)
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(dashboard_exprs())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    subprocess.run(["promtool", "check", "rules", str(path)], check=True)


def test_dashboard_queries_use_only_the_service_metrics():
    used = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= METRICS, f"unknown metrics {names - METRICS} in {expr!r}"
        used |= names
    for must in ("lstm_requests_total", "lstm_request_duration_seconds_bucket", "lstm_sessions_live"):
        assert must in used


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [ln for ln in (DEPLOY / name).read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in text.splitlines() if ln.strip()]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile(name):
    instructions = dockerfile(name)
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000", "--grpc-port", "8001"]
    assert json.loads(dict(final)["CMD"]) == cmd
    assert dict(final)["EXPOSE"] == "8000 8001"
    assert "/v2/health/live" in dict(final)["HEALTHCHECK"]
    env = " ".join(arg for op, arg in final if op == "ENV")
    assert "LSTM_MODEL_REPOSITORY=/app/models" in env
    args = dict(arg.split("=", 1) for op, arg in instructions if op == "ARG" and "=" in arg)
    installs = [c for op, arg in instructions if op == "RUN" for c in re.split(r"&&|;", arg) if "pip install" in c]
    installs = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), c) for c in installs]
    assert any("-c constraints.txt '.[redis]'" in c for c in installs)
    for command in installs:
        assert not re.search(r"\btorch\b|\[[^]]*\btrain\b", command), f"training dependencies installed: {command}"
    if name == "Dockerfile.cuda":
        assert "LSTM_PROVIDERS=cuda,cpu" in env
        assert any("onnxruntime-gpu==" in c for c in installs)
        assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu[\d.]+", args["CUDA_IMAGE"])
    else:
        assert args["PYTHON_IMAGE"] == "python:3.11-slim"


def test_dockerignore_keeps_what_the_images_copy():
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    copied = [
        src
        for name in ("Dockerfile", "Dockerfile.cuda")
        for op, arg in dockerfile(name)
        if op == "COPY" and "--from" not in arg
        for src in shlex.split(arg)[:-1]
    ]
    assert {"service/", "models/", "pyproject.toml", "README.md", "constraints.txt"} <= set(copied)
    for src in copied:
        assert not any(fnmatch.fnmatch(src.rstrip("/"), p) for p in patterns), f"{src} is in .dockerignore"
    for needed in ("service/__main__.py", "models/demand/1/model.onnx", "models/demand/1/model.json"):
        assert not any(fnmatch.fnmatch(needed, p) for p in patterns), needed
    assert {".venv", ".git"} <= set(patterns)
