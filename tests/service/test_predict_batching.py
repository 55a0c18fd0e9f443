"""Stateless predicts batched with requests of other lengths answer whole, exact replies.

A batch hands each request views into its outputs; a predict of several sequences batched
with a longer request gets a strided view of ``y`` (and, for models of several layers, of
``hn``/``cn``), which the JSON encoder refuses: a predict's result owns its arrays.
"""

from __future__ import annotations

import asyncio

import numpy as np

from tests.service.conftest import Offline, in_process, random_steps


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
