"""The lean prototype of ``bench/layer_server.py`` (what ``make bench-layers`` measures) is
exact and keeps the step guarantees it claims: interleaved sequences streamed one reading per
request from concurrent connections -- batched together on the server, on the worker thread
or on the event loop -- give what one offline onnxruntime run over each whole sequence gives,
and a step that names the wrong ``expected_step`` is refused with the sequence unchanged."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import numpy as np
import orjson
import pytest

from bench.layers import layer
from harness.paths import DEFAULT_MODEL
from harness.reference import Offline, random_steps
from tests.test_minimal_server import request

pytestmark = pytest.mark.integration


async def steps(url: str, seq_id: int, xs: np.ndarray, start: bool, **params: object) -> list[tuple[int, dict]]:
    """Requests of one sequence, one at a time on a connection of its own: (status, body) each."""
    host = urlparse(url)
    r, w = await asyncio.open_connection(host.hostname, host.port)
    out = []
    for t, x in enumerate(xs.tolist()):
        p = {"sequence_id": seq_id, "sequence_start": start and t == 0, **params}
        x_in = {"name": "x", "shape": [1, 1, len(x)], "datatype": "FP32", "data": x}
        w.write(request("/v2/models/demand/infer", {"inputs": [x_in], "parameters": p}))
        head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        n = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        out.append((int(head.split()[1]), orjson.loads(await r.readexactly(n))))
    w.close()
    return out


@pytest.mark.parametrize("name", ["lean", "lean-inline"])
def test_lean_prototype_is_exact_and_refuses_a_wrong_expected_step(name: str) -> None:
    rng = np.random.default_rng(24)
    xs = [random_steps(rng, 12) for _ in range(4)]
    offline = Offline(DEFAULT_MODEL)
    with layer(name, {}) as p:

        async def run() -> tuple[list[list[tuple[int, dict]]], list[tuple[int, dict]], list[tuple[int, dict]]]:
            interleaved = await asyncio.gather(*(steps(p.url, 10 + i, x, start=True) for i, x in enumerate(xs)))
            head = await steps(p.url, 30, xs[0][:4], start=True)
            wrong = await steps(p.url, 30, xs[1][:1], start=False, expected_step=99)
            rest = await steps(p.url, 30, xs[0][4:], start=False)
            return list(interleaved), wrong, head + rest

        interleaved, wrong, sequence = asyncio.run(run())
    for replies, x in zip(interleaved, xs, strict=True):
        assert all(s == 200 for s, _ in replies)
        offline.assert_outputs_close([b["outputs"][0]["data"][0] for _, b in replies], offline.run(x)[0][:, 0])
    ((status, body),) = wrong
    assert status == 409 and body["current_step"] == 4, body
    assert all(s == 200 for s, _ in sequence)
    # the refused request changed nothing: the sequence goes on from step 4 as if it never came
    offline.assert_outputs_close([b["outputs"][0]["data"][0] for _, b in sequence], offline.run(xs[0])[0][:, 0])


async def test_the_in_process_step_bench_runs_every_path():
    """``bench.dataplane`` (its figures go into the layer section): every path steps its
    sequences (a path that failed a step would raise here) and is timed."""
    from bench import dataplane

    result = await dataplane.run(5, 1)
    assert set(result) == {"data plane", "v2 endpoint", "lean prototype's step path"}
    assert all(us > 0 for us in result.values()), result
