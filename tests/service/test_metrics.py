"""/metrics passes the real promtool and shows the traffic that went through."""

from __future__ import annotations

import re
import shutil
import subprocess

import httpx
import pytest

from tests.service.conftest import model_shape

pytestmark = pytest.mark.integration

FAMILIES = [
    "lstm_requests_total",
    "lstm_request_duration_seconds_bucket",
    "lstm_queue_wait_seconds_bucket",
    "lstm_inference_seconds_bucket",
    "lstm_batch_size_bucket",
    "lstm_queue_depth",
    "lstm_sessions_live",
    "lstm_sessions_created_total",
    "lstm_sessions_expired_total",
    "lstm_sessions_deleted_total",
    "lstm_steps_total",
    "lstm_model_info",
    "lstm_session_state_bytes",
    "lstm_inference_requests_total",
    "lstm_inference_request_seconds_total",
    "lstm_inference_phase_requests_total",
    "lstm_inference_phase_seconds_total",
    "lstm_executions_total",
    "lstm_execution_seconds_total",
    "lstm_last_inference_timestamp_seconds",
]


def value(text: str, pattern: str) -> float:
    m = re.search("^" + pattern + r" ([0-9.e+-]+)$", text, re.M)
    assert m, f"no sample matching {pattern}"
    return float(m.group(1))


def test_metrics_pass_promtool_and_count_traffic(server):
    promtool = shutil.which("promtool")
    assert promtool, (
        "promtool (Debian package 'prometheus') must be installed; scripts/install-tools.sh (run by make test) installs it"
    )
    with httpx.Client(base_url=server.url, timeout=30) as c:
        before = c.get("/metrics").text
        sid = c.post("/v1/sessions", json={"model": "demand"}).json()["session_id"]
        for _ in range(3):
            assert c.post(f"/v1/sessions/{sid}/step", json={"inputs": [[30000.0, 1.0, 2.0]] * 2}).status_code == 200
        assert c.post(f"/v1/sessions/{sid}/step", json={"inputs": [[1.0]]}).status_code == 400
        assert c.get("/openapi.json").status_code == 200
        big = {"inputs": [[30000.0, 1.0, 2.0]] * 600_000}  # over the 8 MiB default limit
        assert c.post(f"/v1/sessions/{sid}/step", json=big).status_code == 413
        assert c.delete(f"/v1/sessions/{sid}").status_code == 204
        for _ in range(5):
            c.get("/v2/health/ready")
        text = c.get("/metrics").text
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    for fam in FAMILIES:
        assert re.search(f"^{fam}[{{ ]", text, re.M), f"{fam} missing"
    step_route = r'lstm_requests_total\{method="POST",route="/v1/sessions/\{session_id\}/step",status="%s"\}'

    def delta(p: str) -> float:
        try:
            return value(text, p) - value(before, p)
        except AssertionError:
            return value(text, p)

    assert delta(step_route % "200") == 3
    assert delta(step_route % "400") == 1
    assert delta(step_route % "413") == 1, "a body refused before routing still counts under its route"
    assert delta(r'lstm_requests_total\{method="GET",route="/openapi.json",status="200"\}') == 1
    assert 'route="unmatched"' not in text
    assert not re.search(r"^\w+_created[{ ]", text, re.M), "no creation-timestamp series"
    assert delta(r'lstm_steps_total\{model="demand/1"\}') == 6
    assert delta("lstm_sessions_created_total") == 1 and delta("lstm_sessions_deleted_total") == 1
    assert 'provider="CPUExecutionProvider"' in text
    assert "/v2/health" not in text and 'route="/metrics"' not in text, "health and metrics are not traffic"
    assert sid.split(".")[-1] not in text, "no session ids in labels"
    layers, hidden = model_shape()
    assert value(text, r'lstm_session_state_bytes\{model="demand/1"\}') == 2 * layers * hidden * 4  # h and C, float32


@pytest.mark.parametrize("multiprocess", [False, True])
def test_the_hot_path_handles_count_as_the_library_does(tmp_path, monkeypatch, multiprocess):
    """adder, setter and Observer skip prometheus_client's per-call checks: the same values
    through them (a histogram's one by one, or a batch's at once with ``Observer.many``) and
    through the library's own methods give the same exposition (in one process, and with the
    per-worker files of several)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

    from service.metrics import LATENCY_BUCKETS, Observer, adder, exposition, setter

    disable_created_metrics()  # as Metrics() does: no creation timestamps to differ

    from prometheus_client import values

    texts = []
    for mode in (0, 1, 2):  # the library's methods, the fast ones, the fast ones with Observer.many
        if multiprocess:  # as in a worker process the supervisor started: values in files
            (tmp_path / str(mode)).mkdir()
            monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / str(mode)))
            monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
        r = CollectorRegistry()
        c = Counter(f"c{mode}", "c", ["k"], registry=r).labels("a")
        h = Histogram(f"h{mode}", "h", ["k"], buckets=LATENCY_BUCKETS, registry=r).labels("a")
        g = Gauge(f"g{mode}", "g", ["k"], registry=r, multiprocess_mode="livesum").labels("a")
        amounts = [0.0, 0.0005, 0.0007, 0.002, 3.0, 10.0, 11.0, 1e-9, 0.0007]
        for v in amounts:
            if mode:
                adder(c)(v)
                if mode == 1:
                    Observer(h)(v)
                setter(g)(v)
            else:
                c.inc(v)
                h.observe(v)
                g.set(v)
        if mode == 2:
            Observer(h).many(amounts)
        texts.append(re.sub(r"\b([chg])[12]", r"\g<1>0", exposition(r).decode()))
    assert texts[0] == texts[1] == texts[2]
    assert "h0_bucket" in texts[0] and 'le="0.0005"' in texts[0]


def test_an_observer_observes_a_value_n_times():
    """``Observer(h)(v, n)`` (a stream's run of requests answered together) gives the
    exposition of ``n`` observations of ``v`` (values exact in binary, so the sums agree to
    the last digit; 0.5 lies on a bucket's bound)."""
    from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics

    from service.metrics import LATENCY_BUCKETS, Observer, exposition

    disable_created_metrics()
    texts = []
    for mode in (0, 1):
        r = CollectorRegistry()
        h = Histogram(f"h{mode}", "h", ["k"], buckets=LATENCY_BUCKETS, registry=r).labels("a")
        for v, n in ((0.5, 3), (0.25, 1), (2.0, 5), (16.0, 2)):  # 16 s: past the last bound, +Inf
            if mode:
                Observer(h)(v, n)
            else:
                for _ in range(n):
                    h.observe(v)
        texts.append(exposition(r).decode().replace("h1", "h0"))
    assert texts[0] == texts[1]
    assert 'h0_count{k="a"} 11.0' in texts[0]


@pytest.mark.parametrize("multiprocess", [False, True])
def test_the_fast_handles_and_the_library_write_one_value(tmp_path, monkeypatch, multiprocess):
    """In one process the fast handles write a lock-free value that takes the library's
    place in the child: a value written before, the library's own writes after, and a second
    handle on the same child all land on one figure (nothing is lost). With several workers
    the library's file-backed values stay."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, values

    from service.metrics import LoopValue, Observer, adder

    if multiprocess:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    r = CollectorRegistry()
    c = Counter("c", "c", ["k"], registry=r).labels("a")
    h = Histogram("h", "h", ["k"], buckets=(1.0, 2.0), registry=r).labels("a")
    c.inc(1)
    h.observe(0.5)
    first, second = adder(c), adder(c)
    first(2)
    second(3)
    c.inc(4)
    Observer(h)(1.5)
    Observer(h).many([0.5, 3.0])
    h.observe(1.5)
    assert (type(c._value) is LoopValue) != multiprocess
    assert all((type(b) is LoopValue) != multiprocess for b in [h._sum, *h._buckets])
    assert c._value.get() == 10
    assert [b.get() for b in h._buckets] == [2, 2, 1] and h._sum.get() == 7.0
