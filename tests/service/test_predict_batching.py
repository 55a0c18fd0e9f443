"""Requests of several lengths in one batch: exact replies, and the calls they make.

Stateless predicts batched with requests of other lengths answer whole, exact replies.

A batch hands each request views into its outputs; a predict of several sequences batched
with a longer request gets a strided view of ``y`` (and, for models of several layers, of
``hn``/``cn``), which the JSON encoder refuses: a predict's result owns its arrays.
"""

from __future__ import annotations

import asyncio

import numpy as np

from service.batching import collate
from service.metrics import Metrics, collected
from tests.service.conftest import Offline, data_plane, in_process, random_steps


async def test_predicts_of_several_lengths_in_one_batch(offline: Offline):
    rng = np.random.default_rng(8)
    short = [random_steps(rng, 1) for _ in range(2)]  # 2 sequences x 1 step
    long = random_steps(rng, 6)  # 1 sequence x 6 steps
    bodies = [{"inputs": [s.tolist() for s in short]}, {"inputs": [long.tolist()]}] * 3
    async with in_process() as client:
        replies = await asyncio.gather(*(client.post("/v1/models/demand/predict", json=b) for b in bodies))
    for body, r in zip(bodies, replies, strict=True):
        assert r.status_code == 200, r.text
        for x, got in zip(body["inputs"], r.json()["outputs"], strict=True):
            offline.assert_outputs_close(got, offline.run(np.asarray(x, np.float32))[0])


async def test_a_long_request_among_readings_runs_in_a_call_of_its_own(offline: Offline):
    """The batch handler's calls (service/batching/collate.calls): 33 one-reading steps and one
    8-step request in one batch make two onnxruntime calls, not one padded to 8 steps, and
    every request's outputs and state are exact."""
    metrics = Metrics()
    async with data_plane(metrics=metrics) as dp:
        w = dp.worker("demand")
        rng = np.random.default_rng(4)
        xs = [random_steps(rng, 1)[None] for _ in range(33)] + [random_steps(rng, 8)[None]]
        ys, new = await w.infer(xs, np.zeros((2, offline.layers, len(xs), offline.hidden), np.float32))
        for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
            want_y, want_state = offline.run(x[0])
            offline.assert_outputs_close(y[0], want_y)
            np.testing.assert_allclose(new[:, :, k], want_state, rtol=0, atol=1e-5)
        executions = collected(metrics.registry)["lstm_executions"].samples
        calls = {s.labels["batch_size"]: s.value for s in executions if s.name == "lstm_executions_total"}
        assert calls == {"33": 1.0, "1": 1.0}


async def test_each_request_runs_from_its_own_state_rows_in_any_order_of_calls(offline: Offline):
    """The batch's state input is one array, its rows in the order of the requests' rows. With
    a call's fixed cost the larger (the estimate set here, as the warm-up would measure it), the
    batch makes one call of its requests sorted by length, longer ones first in the batch; with
    a row-step's, a call per length. Either way each request (of one to three rows) runs from
    its own rows, and its new states come back in them. States from real streams, so that a
    row mixed up shows."""
    rng = np.random.default_rng(12)
    shapes = ((1, 2), (2, 1), (1, 3), (3, 1), (2, 2))  # (rows, steps) per request
    async with data_plane() as dp:
        w = dp.worker("demand")
        for call_s, row_step_s, want_calls in ((1.0, 0.0, [[1, 3, 0, 4, 2]]), (0.0, 1.0, [[1, 3], [0, 4], [2]])):
            w.model.call_s, w.model.step_s, w.model.row_step_s = call_s, 0.0, row_step_s
            calls = collate.calls([t for _, t in shapes], [n for n, _ in shapes], lambda r, t: w.call_cost(r, t, 0.0))
            assert calls == want_calls
            xs = [np.stack([random_steps(rng, t) for _ in range(n)]) for n, t in shapes]
            starts = [offline.run(random_steps(rng, 5))[1] for _ in range(sum(n for n, _ in shapes))]
            ys, new = await w.infer(xs, np.stack(starts, axis=2))
            r = 0
            for x, y in zip(xs, ys, strict=True):
                for row in range(len(x)):
                    want_y, want_state = offline.run(x[row], starts[r])
                    offline.assert_outputs_close(y[row], want_y)
                    np.testing.assert_allclose(new[:, :, r], want_state, rtol=0, atol=1e-5)
                    r += 1
