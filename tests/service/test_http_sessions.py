"""Sessions through a real server: exactness, ordering, retries, and bad input."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.service.conftest import create, random_steps, snapshot_state

pytestmark = pytest.mark.integration


async def test_32_streams_in_random_chunks_equal_offline_runs(server, offline):
    rng = np.random.default_rng(0)
    seqs = [random_steps(rng, int(rng.integers(20, 200))) for _ in range(32)]

    async def stream(client, x):
        sid = await create(client)
        outs, t = [], 0
        while t < len(x):
            n = int(rng.integers(1, 18))
            r = await client.post(
                f"/v1/sessions/{sid}/step", json={"inputs": x[t : t + n].tolist(), "expected_step": t}
            )
            assert r.status_code == 200, r.text
            body = r.json()
            t += len(body["outputs"])
            assert body["step"] == t
            outs.append(np.asarray(body["outputs"], np.float32))
        return sid, np.concatenate(outs)

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        before = _batch_stats((await client.get("/metrics")).text)
        results = await asyncio.gather(*(stream(client, x) for x in seqs))
        after = _batch_stats((await client.get("/metrics")).text)
        for (sid, got), x in zip(results, seqs, strict=True):
            want_y, want_state = offline.run(x)
            offline.assert_outputs_close(got, want_y)
            step, state = await snapshot_state(client, sid)
            assert step == len(x)
            assert np.max(np.abs(state - want_state)) <= 1e-5
    rows, calls = after[0] - before[0], after[1] - before[1]
    assert rows > calls, f"no two requests were ever batched together ({rows} rows in {calls} calls)"


def _batch_stats(metrics: str) -> tuple[float, float]:
    vals = {}
    for line in metrics.splitlines():
        for k in ("lstm_batch_size_sum", "lstm_batch_size_count"):
            if line.startswith(k + "{"):
                vals[k] = vals.get(k, 0.0) + float(line.rsplit(" ", 1)[1])
    return vals.get("lstm_batch_size_sum", 0.0), vals.get("lstm_batch_size_count", 0.0)


async def test_concurrent_steps_on_one_session_lose_no_update(server, offline):
    rng = np.random.default_rng(1)
    x = random_steps(rng, 40)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        replies = await asyncio.gather(
            *(client.post(f"/v1/sessions/{sid}/step", json={"inputs": [row.tolist()]}) for row in x)
        )
        assert all(r.status_code == 200 for r in replies)
        steps = [r.json()["step"] for r in replies]
        assert sorted(steps) == list(range(1, 41)), "each request must advance the session exactly once"
        order = np.argsort(steps)  # the order the server applied them
        want_y, want_state = offline.run(x[order])
        got = np.asarray([replies[i].json()["outputs"][0] for i in order])
        offline.assert_outputs_close(got, want_y)
        step, state = await snapshot_state(client, sid)
        assert step == 40 and np.max(np.abs(state - want_state)) <= 1e-5


async def test_retry_returns_stored_reply_and_advances_once(server, offline):
    x = random_steps(np.random.default_rng(2), 5)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        first = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[:3].tolist(), "expected_step": 0})
        again = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[:3].tolist(), "expected_step": 0})
        assert first.status_code == again.status_code == 200
        assert again.json()["outputs"] == first.json()["outputs"] and again.json()["replayed"] is True
        assert again.json()["step"] == 3
        # the same expected_step with other inputs is not a retry
        other = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[3:4].tolist(), "expected_step": 0})
        assert other.status_code == 409 and other.json()["current_step"] == 3
        # a step from the future is refused too
        future = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[3:].tolist(), "expected_step": 7})
        assert future.status_code == 409
        last = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[3:].tolist(), "expected_step": 3})
        assert last.json()["step"] == 5
        want, _ = offline.run(x)
        offline.assert_outputs_close(first.json()["outputs"] + last.json()["outputs"], want)


BAD_STEPS = [
    ({"inputs": [[30000.0, 8.0]]}, 400, "3 features"),
    ({"inputs": [[30000.0, 8.0, 1.0, 5.0]]}, 400, "3 features"),
    ({"inputs": []}, 400, "1 to"),
    ({"inputs": [[1e39, 8.0, 1.0]]}, 400, "NaN or infinite"),
    ({"inputs": [["a", 8.0, 1.0]]}, 400, "numbers only"),
    ({"inputs": [30000.0, 8.0, 1.0]}, 400, "a list of numbers; got a number"),
    ({"inputs": [[[30000.0, 8.0, 1.0]]]}, 400, "numbers only; got a list"),
    ({"inputs": [[30000.0, 8.0, 1.0]], "extra": 1}, 400, "extra"),
    ({"inputs": [[30000.0, 8.0, 1.0]], "expected_step": -1}, 400, "expected_step"),
    ({"steps": [[30000.0, 8.0, 1.0]]}, 400, "inputs"),
]


async def test_bad_input_is_a_clear_4xx_and_leaves_state_untouched(server, offline):
    x = random_steps(np.random.default_rng(3), 4)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        ok = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[:2].tolist()})
        assert ok.status_code == 200
        _, state_before = await snapshot_state(client, sid)
        for body, status, words in BAD_STEPS:
            r = await client.post(f"/v1/sessions/{sid}/step", json=body)
            assert r.status_code == status, (body, r.text)
            assert words in r.json()["error"], (body, r.text)
        for raw in (b'{"inputs": [[NaN, 8.0, 1.0]]}', b'{"inputs": [[1, 2, 3]', b"not json"):
            r = await client.post(f"/v1/sessions/{sid}/step", content=raw, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500 and r.json()["error"], raw
        big = b'{"inputs": [' + b",".join([b"[30000.0, 8.0, 1.0]"] * 500_000) + b"]}"
        r = await client.post(f"/v1/sessions/{sid}/step", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit" in r.json()["error"]
        step, state_after = await snapshot_state(client, sid)
        assert step == 2 and np.array_equal(state_before, state_after)
        good = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[2:].tolist(), "expected_step": 2})
        want, _ = offline.run(x)
        offline.assert_outputs_close(ok.json()["outputs"] + good.json()["outputs"], want)


async def test_unknown_model_version_and_session(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.post("/v1/sessions", json={"model": "nope"})
        assert r.status_code == 404 and "not served" in r.json()["error"]
        r = await client.post("/v1/sessions", json={"model": "demand", "version": "9"})
        assert r.status_code == 404 and "no version '9'" in r.json()["error"]
        r = await client.post("/v1/models/nope/predict", json={"inputs": [[[1.0, 2.0, 3.0]]]})
        assert r.status_code == 404
        for sid in ("nope", "demand.1.unknownunknownunknown", "other.1.x"):
            r = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": [[1.0, 2.0, 3.0]]})
            assert r.status_code == 404 and "unknown or has expired" in r.json()["error"]


async def test_stateless_predict_equals_offline_and_continues_from_given_state(server, offline):
    rng = np.random.default_rng(4)
    x = np.stack([random_steps(rng, 30, start=0) for _ in range(3)])
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.post("/v1/models/demand/predict", json={"inputs": x[:, :10].tolist()})
        assert r.status_code == 200, r.text
        first = r.json()
        r = await client.post(
            "/v1/models/demand/versions/1/predict",
            json={"inputs": x[:, 10:].tolist(), "h0": first["hn"], "c0": first["cn"]},
        )
        second = r.json()
    for b in range(3):
        want, state = offline.run(x[b])
        offline.assert_outputs_close(np.concatenate([first["outputs"][b], second["outputs"][b]]), want)
        got_state = np.stack([np.asarray(second["hn"])[:, b], np.asarray(second["cn"])[:, b]])
        assert np.max(np.abs(got_state - state)) <= 1e-5


async def test_snapshot_import_continues_the_stream_and_checks_the_model(server, offline):
    x = random_steps(np.random.default_rng(5), 12)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        a = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[:7].tolist()})
        snap = (await client.get(f"/v1/sessions/{sid}/snapshot")).json()
        r = await client.post("/v1/sessions/import", json=snap)
        assert r.status_code == 201 and r.json()["step"] == 7
        b = await client.post(f"/v1/sessions/{r.json()['session_id']}/step", json={"inputs": x[7:].tolist()})
        want, _ = offline.run(x)
        offline.assert_outputs_close(a.json()["outputs"] + b.json()["outputs"], want)
        r = await client.post("/v1/sessions/import", json={**snap, "sha256": "0" * 64})
        assert r.status_code == 409 and "checksum" in r.json()["error"]
        assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204
        r = await client.get(f"/v1/sessions/{sid}")
        assert r.status_code == 404
