"""The card's input grid: the default model reads ``hour_of_day`` on the half hour and
``day_of_week`` as a whole day, exactly; a reading off that grid is refused with 400 on every
protocol, before any state is touched."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from websockets.asyncio.client import connect

from harness.server import Server

pytestmark = pytest.mark.integration

GOOD = [30000.0, 8.5, 2.0]
OFF_GRID = {"hour_of_day": [30000.0, 8.25, 2.0], "day_of_week": [30000.0, 8.0, 2.5]}


def _snapshot(c: httpx.Client, sid: str) -> dict:
    r = c.get(f"/v1/sessions/{sid}/snapshot")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("feature", sorted(OFF_GRID))
async def test_an_off_grid_reading_is_refused_on_every_protocol_and_changes_nothing(server: Server, feature: str):
    bad = OFF_GRID[feature]
    grid = "a multiple of 0.5" if feature == "hour_of_day" else "a multiple of 1"
    with httpx.Client(base_url=server.url, timeout=30) as c:
        sid = c.post("/v1/sessions", json={"model": "demand"}).json()["session_id"]
        assert c.post(f"/v1/sessions/{sid}/step", json={"inputs": [GOOD]}).status_code == 200
        before = _snapshot(c, sid)

        # v1
        r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": [GOOD, bad]})
        assert r.status_code == 400 and f"{feature} must be {grid}" in r.json()["error"], r.text
        assert "time step 1" in r.json()["error"]
        # v1 stateless predict
        r = c.post("/v1/models/demand/predict", json={"inputs": [[GOOD, bad]]})
        assert r.status_code == 400 and feature in r.json()["error"], r.text

        # v2 sequence, JSON and binary (through tritonclient, as a user would)
        seq = f"grid-{feature}"
        x = np.array([[GOOD]], np.float32)
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        for binary in (False, True):
            inp = httpclient.InferInput("x", [1, 1, 3], "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            first = client.infer("demand", [inp], sequence_id=seq, sequence_start=True).as_numpy("y")
            inp.set_data_from_numpy(np.array([[bad]], np.float32), binary_data=binary)
            with pytest.raises(InferenceServerException) as e:
                client.infer("demand", [inp], sequence_id=seq)
            assert e.value.status() == "400" and feature in e.value.message(), e.value
            # the refused request changed nothing: the next good step is the second of the sequence
            inp.set_data_from_numpy(x, binary_data=binary)
            res = client.infer("demand", [inp], sequence_id=seq, parameters={"expected_step": 1})
            assert res.get_response()["parameters"]["step"] == 2
            assert first.shape == (1, 1, 1)
        client.close()

        # gRPC
        g = grpcclient.InferenceServerClient(server.grpc)
        ginp = grpcclient.InferInput("x", [1, 1, 3], "FP32")
        ginp.set_data_from_numpy(np.array([[bad]], np.float32))
        with pytest.raises(InferenceServerException) as e:
            g.infer("demand", [ginp], sequence_id=seq)
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and feature in e.value.message()
        g.close()

        # WebSocket
        ws_url = server.url.replace("http://", "ws://", 1) + f"/v1/sessions/{sid}/stream"
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"inputs": [bad], "expected_step": 1}))
            reply = json.loads(await ws.recv())
            assert reply["status"] == 400 and feature in reply["error"], reply

        assert _snapshot(c, sid) == before, "a refused reading moved the session"
