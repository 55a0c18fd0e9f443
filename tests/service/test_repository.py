"""The model repository extension and hot reload, on real servers: versions loaded and
unloaded while sessions and sequences stream, a broken version refused, the poll mode.

Every new version is a copy of the default model, so the offline run of the default model is
the reference for every stream, whichever version serves it; which version served it is
checked from the replies (the session's ``version``, the v2 reply's ``model_version``).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from harness.redis import redis_server
from harness.repository import add_version
from service.config import Settings
from tests.service.conftest import in_process, random_steps, running_server

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # the most any wait on the server's own state may take


@pytest.fixture(scope="module")
def explicit(tmp_path_factory):
    """A server in explicit mode over a repository of three copies of the default model
    (one per test, so that the tests do not depend on each other's order)."""
    repo = tmp_path_factory.mktemp("repo")
    for name in ("demand", "guarded", "seq"):
        add_version(repo, name, 1)
    with running_server({"LSTM_MODEL_CONTROL_MODE": "explicit"}, repo=repo) as s:
        yield s.url, repo


def versions(index: list[dict], name: str) -> dict[str, tuple[str, str]]:
    return {e["version"]: (e["state"], e["reason"]) for e in index if e["name"] == name}


async def index(c: httpx.AsyncClient, **body) -> list[dict]:
    r = await c.post("/v2/repository/index", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def step(c: httpx.AsyncClient, sid: str, x: np.ndarray, expected: int) -> np.ndarray:
    r = await c.post(f"/v1/sessions/{sid}/step", json={"inputs": x.tolist(), "expected_step": expected})
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["outputs"], np.float32)


async def new_session(c: httpx.AsyncClient, model: str) -> tuple[str, str]:
    r = await c.post("/v1/sessions", json={"model": model})
    assert r.status_code == 201, r.text
    return r.json()["session_id"], r.json()["version"]


def model_info_versions(metrics: str, model: str) -> set[str]:
    return set(re.findall(rf'lstm_model_info{{model="{model}",provider="[^"]+",version="(\d+)"}} 1\.0', metrics))


async def test_hot_load_while_8_sessions_stream(explicit, offline):
    """Version 2 is loaded while 8 sessions stream on version 1 (each keeps stepping, with
    ``expected_step``, from before the load request until three steps after its reply): no
    step fails and every stream continues exactly; new sessions and unversioned requests go to version 2; version 1
    refuses to unload while its sessions live, and a forced unload ends them with a 404."""
    url, repo = explicit
    rng = np.random.default_rng(12)
    streams = [random_steps(rng, 2000) for _ in range(8)]
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as c:
        sids = [(await new_session(c, "demand"))[0] for _ in range(8)]
        assert all(sid.startswith("demand.1.") for sid in sids)
        outputs: list[list[np.ndarray]] = [[] for _ in sids]
        consumed = [0] * len(sids)
        streaming, loaded = asyncio.Event(), asyncio.Event()

        async def stream(i: int) -> None:
            chunks = np.random.default_rng(i)
            after = 0
            while after < 3:  # until three steps after the load
                n = int(chunks.integers(1, 4))
                assert consumed[i] + n <= len(streams[i]), "the load outlasted the streams"
                outputs[i].append(await step(c, sids[i], streams[i][consumed[i] : consumed[i] + n], consumed[i]))
                consumed[i] += n
                if loaded.is_set():
                    after += 1
                if all(consumed):
                    streaming.set()

        tasks = [asyncio.create_task(stream(i)) for i in range(len(sids))]
        await asyncio.wait_for(streaming.wait(), WAIT_S)
        add_version(repo, "demand", 2)  # while the 8 streams go on stepping
        r = await c.post("/v2/repository/models/demand/load", json={})
        loaded.set()
        assert r.status_code == 200, r.text
        assert r.json() == {"name": "demand", "loaded": ["2"], "versions": ["1", "2"]}
        await asyncio.gather(*tasks)  # every step of every stream succeeded: none failed for the swap

        # the old sessions continued exactly, on version 1
        for i, sid in enumerate(sids):
            want, _ = offline.run(streams[i][: consumed[i]])
            offline.assert_outputs_close(np.concatenate(outputs[i]), want)
            assert (await c.get(f"/v1/sessions/{sid}")).json()["version"] == "1"

        # new work goes to the newest version; metadata, index and metrics show both
        new_sid, version = await new_session(c, "demand")
        assert version == "2" and new_sid.startswith("demand.2.")
        r = await c.post("/v1/models/demand/predict", json={"inputs": [streams[0][:3].tolist()]})
        assert r.json()["version"] == "2"
        assert (await c.get("/v2/models/demand")).json()["versions"] == ["1", "2"]
        assert versions(await index(c), "demand") == {"1": ("READY", ""), "2": ("READY", "")}
        assert model_info_versions((await c.get("/metrics")).text, "demand") == {"1", "2"}

        # version 1 refuses to unload while its 8 sessions live, and goes on serving them
        r = await c.post("/v2/repository/models/demand/unload", json={"parameters": {"version": "1"}})
        assert r.status_code == 409, r.text
        assert "demand/1 has 8 live session(s)" in r.json()["error"] and "unload_dependents" in r.json()["error"]
        r = await c.post("/v2/repository/models/demand/unload", json={})  # the whole model: both versions
        assert r.status_code == 409 and "demand/2 has 1 live session(s)" in r.json()["error"]
        x = streams[0][consumed[0] : consumed[0] + 2]
        got = await step(c, sids[0], x, consumed[0])
        want, _ = offline.run(streams[0][: consumed[0] + 2])
        offline.assert_outputs_close(got, want[-2:])

        # forced: the sessions end, and a step on one says why
        r = await c.post(
            "/v2/repository/models/demand/unload", json={"parameters": {"version": "1", "unload_dependents": True}}
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"name": "demand", "unloaded": ["1"], "sessions_ended": 8, "versions": ["2"]}
        r = await c.post(f"/v1/sessions/{sids[1]}/step", json={"inputs": streams[1][:1].tolist()})
        assert r.status_code == 404
        assert "version '1' of model 'demand', which was unloaded" in r.json()["error"], r.text
        assert versions(await index(c), "demand") == {
            "1": ("UNAVAILABLE", "unloaded (forced; 8 session(s) ended)"),
            "2": ("READY", ""),
        }
        assert versions(await index(c, ready=True), "demand") == {"2": ("READY", "")}
        assert model_info_versions((await c.get("/metrics")).text, "demand") == {"2"}
        assert (await c.get("/v2/models/demand")).json()["versions"] == ["2"]
        r = await c.get("/v2/models/demand/versions/1/ready")
        assert r.status_code == 404 and "unloaded" in r.json()["error"]
        assert (await c.get("/v2/health/ready")).status_code == 200
        x = streams[2][:5]
        offline.assert_outputs_close(await step(c, new_sid, x, 0), offline.run(x)[0])


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(explicit, offline):
    """A version whose card disagrees with its graph is refused with a clear error (through
    the real tritonclient); version 1 keeps serving, and the version loads once fixed."""
    url, repo = explicit
    client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=WAIT_S)
    try:
        path = add_version(repo, "guarded", 2, hidden_size=32)
        with pytest.raises(InferenceServerException) as e:
            client.load_model("guarded")
        msg = str(e.value)
        assert "'guarded': 1 version(s) refused, not loaded" in msg and "serving versions: ['1']" in msg, msg
        assert "hidden" in msg, msg
        state, reason = {e["version"]: (e["state"], e["reason"]) for e in client.get_model_repository_index()}["2"]
        assert state == "UNAVAILABLE" and reason.startswith("load failed:")
        assert client.get_model_metadata("guarded")["versions"] == ["1"]
        x = random_steps(np.random.default_rng(3), 6)
        inp = httpclient.InferInput("x", [1, 6, 3], "FP32")
        inp.set_data_from_numpy(x[None])
        res = client.infer("guarded", [inp])
        assert res.get_response()["model_version"] == "1"
        offline.assert_outputs_close(res.as_numpy("y")[0], offline.run(x)[0])
        with pytest.raises(InferenceServerException, match="load failed"):
            client.infer("guarded", [inp], model_version="2")

        shutil.rmtree(path)
        add_version(repo, "guarded", 2)
        client.load_model("guarded")
        assert client.get_model_metadata("guarded")["versions"] == ["1", "2"]
        assert client.infer("guarded", [inp]).get_response()["model_version"] == "2"
        with pytest.raises(InferenceServerException, match="not in the model repository"):
            client.load_model("nothing-here")
        with pytest.raises(InferenceServerException, match="not served"):
            client.unload_model("nothing-here")
    finally:
        client.close()


def infer_body(x: np.ndarray, **params) -> dict:
    return {
        "inputs": [{"name": "x", "shape": [1, *x.shape], "datatype": "FP32", "data": x.ravel().tolist()}],
        "parameters": params,
    }


async def test_a_sequence_without_a_version_stays_on_the_version_it_started_on(explicit, offline):
    url, repo = explicit
    x = random_steps(np.random.default_rng(5), 12)
    want, _ = offline.run(x)

    async def send(rows: slice, **params) -> tuple[str, np.ndarray]:
        r = await c.post("/v2/models/seq/infer", json=infer_body(x[rows], **params))
        assert r.status_code == 200, r.text
        return r.json()["model_version"], np.asarray(r.json()["outputs"][0]["data"], np.float32)

    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as c:
        v, y = await send(slice(0, 3), sequence_id=7, sequence_start=True)
        assert v == "1"
        offline.assert_outputs_close(y, want[:3, 0])
        await send(slice(0, 2), sequence_id="meter-9", sequence_start=True)
        add_version(repo, "seq", 2)
        assert (await c.post("/v2/repository/models/seq/load")).status_code == 200
        # continuing: still version 1, exactly where it was
        v, y = await send(slice(3, 7), sequence_id=7)
        assert v == "1"
        offline.assert_outputs_close(y, want[3:7, 0])
        assert (await send(slice(2, 4), sequence_id="meter-9"))[0] == "1"
        # a new sequence starts on version 2; so does a restarted one, which leaves version 1
        assert (await send(slice(0, 1), sequence_id=8, sequence_start=True))[0] == "2"
        v, y = await send(slice(0, 5), sequence_id=7, sequence_start=True)
        assert v == "2"
        offline.assert_outputs_close(y, want[:5, 0])
        v, y = await send(slice(5, 12), sequence_id=7, sequence_end=True)
        assert v == "2"
        offline.assert_outputs_close(y, want[5:12, 0])
        r = await c.post("/v2/repository/models/seq/unload", json={"parameters": {"version": "1"}})
        assert r.status_code == 409 and "seq/1 has 1 live session(s)" in r.json()["error"]  # meter-9 only


async def wait_for_index(c: httpx.AsyncClient, name: str, want: dict[str, tuple[str, str]]) -> None:
    """Poll the server's own index until the model's versions are as wanted."""
    deadline = time.monotonic() + WAIT_S
    while (got := versions(await index(c), name)) != want:
        assert time.monotonic() < deadline, f"the index still shows {got}, not {want}"
        await asyncio.sleep(0.02)


async def test_poll_mode_follows_the_repository_directory(tmp_path: Path):
    add_version(tmp_path, "demand", 1)
    env = {"LSTM_MODEL_CONTROL_MODE": "poll", "LSTM_REPOSITORY_POLL_INTERVAL_S": "0.05"}
    with running_server(env, repo=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT_S) as c:
            old, _ = await new_session(c, "demand")
            add_version(tmp_path, "demand", 2)
            await wait_for_index(c, "demand", {"1": ("READY", ""), "2": ("READY", "")})
            assert (await new_session(c, "demand"))[1] == "2"
            # a removed version stays while its session lives, and unloads once it ends
            shutil.rmtree(tmp_path / "demand" / "1")
            removed = ("READY", "removed from the repository; unloads when its 1 session(s) end")
            await wait_for_index(c, "demand", {"1": removed, "2": ("READY", "")})
            await step(c, old, random_steps(np.random.default_rng(1), 2), 0)
            assert (await c.delete(f"/v1/sessions/{old}")).status_code == 204
            await wait_for_index(c, "demand", {"1": ("UNAVAILABLE", "unloaded"), "2": ("READY", "")})
            # a broken version is refused, listed with why, and tried again once its files change
            add_version(tmp_path, "demand", 3, n_outputs=2)
            deadline = time.monotonic() + WAIT_S
            while (state := versions(await index(c), "demand").get("3", ("", ""))[0]) != "UNAVAILABLE" or (
                not versions(await index(c), "demand")["3"][1].startswith("load failed:")
            ):
                assert time.monotonic() < deadline, f"version 3 is {state}"
                await asyncio.sleep(0.02)
            r = await c.post("/v2/repository/models/demand/load")
            assert r.status_code == 409 and "model control mode 'poll'" in r.json()["error"]
            shutil.rmtree(tmp_path / "demand" / "3")
            add_version(tmp_path, "demand", 3)
            await wait_for_index(
                c, "demand", {"1": ("UNAVAILABLE", "unloaded"), "2": ("READY", ""), "3": ("READY", "")}
            )


async def test_mode_none_lists_but_never_changes(default_model_dir):
    async with in_process(Settings(model_repository=default_model_dir.parent.parent)) as c:
        assert versions(await index(c), "demand") == {"1": ("READY", "")}
        r = await c.post("/v2/repository/index")  # tritonclient sends no body
        assert r.status_code == 200 and r.json()[0]["name"] == "demand"
        for action in ("load", "unload"):
            r = await c.post(f"/v2/repository/models/demand/{action}", json={})
            assert r.status_code == 409, r.text  # a conflict with the server's mode, not a bad request
            assert f"cannot {action} models: the server runs with model control mode 'none'" in r.json()["error"]
        r = await c.post("/v2/repository/models/demand/unload", json={"parameters": {"force": True}})
        assert r.status_code == 400 and "unknown parameter(s) ['force']" in r.json()["error"]
        meta = (await c.get("/v2")).json()
        assert {"model_repository", "model_repository(unload_dependents)"} <= set(meta["extensions"])


async def test_with_redis_sessions_a_forced_unload_of_the_whole_model_and_back(tmp_path: Path):
    """The Redis store counts and removes a version's sessions for the registry; unloading every
    version leaves the service not ready until a model is loaded again."""
    add_version(tmp_path, "demand", 1)
    add_version(tmp_path, "demand", 2)
    with redis_server() as redis:
        settings = Settings(
            model_repository=tmp_path, model_control_mode="explicit", session_store="redis", redis_url=redis.url
        )
        async with in_process(settings) as c:
            for version in ("1", "2", "2"):
                assert (await c.post("/v1/sessions", json={"model": "demand", "version": version})).status_code == 201
            r = await c.post("/v2/repository/models/demand/unload")
            assert r.status_code == 409, r.text
            assert "demand/1 has 1 live session(s), demand/2 has 2 live session(s)" in r.json()["error"]
            r = await c.post("/v2/repository/models/demand/unload", json={"parameters": {"unload_dependents": True}})
            assert r.json() == {"name": "demand", "unloaded": ["1", "2"], "sessions_ended": 3, "versions": []}
            assert (await c.get("/metrics")).text.count("lstm_sessions_live 0.0") == 1
            r = await c.get("/v2/health/ready")
            assert r.status_code == 503 and r.json()["reason"] == "no model is loaded"
            assert (await c.post("/v1/sessions", json={"model": "demand"})).status_code == 404
            r = await c.post("/v2/repository/models/demand/load")
            assert r.json() == {"name": "demand", "loaded": ["1", "2"], "versions": ["1", "2"]}
            assert (await c.get("/v2/health/ready")).status_code == 200
            assert (await new_session(c, "demand"))[1] == "2"


def test_the_repository_rpcs_over_grpc(tmp_path: Path, offline):
    """The gRPC repository RPCs make the same registry calls as REST (the real tritonclient.grpc)."""
    import tritonclient.grpc as grpcclient

    add_version(tmp_path, "demand", 1)
    with running_server({"LSTM_MODEL_CONTROL_MODE": "explicit"}, repo=tmp_path) as s:
        client = grpcclient.InferenceServerClient(s.grpc)
        try:
            assert [(m.name, m.version, m.state) for m in client.get_model_repository_index().models] == [
                ("demand", "1", "READY")
            ]
            add_version(tmp_path, "demand", 2)
            client.load_model("demand")
            assert client.get_model_metadata("demand").versions == ["1", "2"]
            sid = httpx.post(s.url + "/v1/sessions", json={"model": "demand", "version": "2"}).json()["session_id"]
            with pytest.raises(InferenceServerException, match="live session"):
                client.unload_model("demand", unload_dependents=False)
            client.unload_model("demand", unload_dependents=True)
            r = httpx.post(s.url + f"/v1/sessions/{sid}/step", json={"inputs": [[30500.0, 8.0, 2.0]]})
            assert r.status_code == 404 and "unloaded" in r.json()["error"]
            assert {m.state for m in client.get_model_repository_index().models} <= {"UNAVAILABLE"}
            with pytest.raises(InferenceServerException, match="parameter"):
                client.load_model("demand", config='{"max_batch_size": 2}')
        finally:
            client.close()
