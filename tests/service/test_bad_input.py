"""Every transport answers bad input alike: one status per kind of error, a plain message that
names the field and what was expected, and the session's state untouched.

Written against the routes (v1 step and predict, v2 JSON and binary, WebSocket), not against
whatever mechanism serves them.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
import websockets

from tests.service.conftest import Server, create, random_steps, running_server, snapshot_state

pytestmark = pytest.mark.integration

LIMIT = 50_000
OK = [30500.0, 8.0, 2.0]
# (what, inputs of one step, status, words the message must hold)
BAD_VALUES = [
    ("numeric strings", [["30500", "8", "2"]], 400, "numbers only; got a string"),
    ("null", [[None, 8.0, 2.0]], 400, "numbers only; got null"),
    ("boolean", [[True, 8.0, 2.0]], 400, "numbers only; got a boolean"),
    ("ragged rows", [OK, [30500.0, 8.5]], 400, "rectangular"),
    ("too few features", [[30500.0, 8.0]], 400, "3 features"),
    ("1e300", [[1e300, 8.0, 2.0]], 400, "too large for float32"),
    ("43-digit integer", [[10**42, 8.0, 2.0]], 400, "too large for float32"),
    ("hour out of range", [[30500.0, 99.0, 2.0]], 400, "hour_of_day must be within [0, 23.5]"),
    ("day out of range", [[30500.0, 8.0, 9.0]], 400, "day_of_week must be within [0, 6]"),
    ("demand out of range", [[3e38, 8.0, 2.0]], 400, "demand must be within"),
    ("no steps", [], 400, "1 to"),
]
# raw bodies that are not the request at all
BAD_BODIES = [
    ("NaN literal", b'{"inputs": [[NaN, 8.0, 2.0]]}', 400, "not valid JSON"),
    ("truncated JSON", b'{"inputs": [[1, 2, 3]', 400, "not valid JSON"),
    ("not JSON", b"inputs=1,2,3", 400, "not valid JSON"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server({"LSTM_MAX_BODY_BYTES": str(LIMIT)}) as s:
        yield s


def _v2_body(rows: list, sequence_id: int | None = 7, start: bool = False) -> dict:
    params = {"sequence_id": sequence_id, "sequence_start": start} if sequence_id else {}
    return {
        "parameters": params,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, len(rows), 3], "data": rows}],
    }


async def _state(client: httpx.AsyncClient, sid: str) -> tuple[int, np.ndarray]:
    return await snapshot_state(client, sid)


@pytest.mark.parametrize(("what", "rows", "status", "words"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
async def test_v1_step_refuses_bad_values_and_keeps_state(server, what, rows, status, words):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        assert (await client.post(f"/v1/sessions/{sid}/step", json={"inputs": [OK]})).status_code == 200
        before = await _state(client, sid)
        r = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": rows, "expected_step": 1})
        assert r.status_code == status and words in r.json()["error"], r.text
        after = await _state(client, sid)
        assert after[0] == before[0] == 1 and np.array_equal(after[1], before[1])


@pytest.mark.parametrize(("what", "rows", "status", "words"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
async def test_v1_predict_refuses_bad_values(server, what, rows, status, words):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.post("/v1/models/demand/predict", json={"inputs": [rows]})
        assert r.status_code == status and words in r.json()["error"], r.text


@pytest.mark.parametrize(("what", "rows", "status", "words"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
async def test_v2_json_refuses_bad_values_and_keeps_sequence(server, what, rows, status, words):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        seq = 1000 + BAD_VALUES.index((what, rows, status, words))
        first = await client.post("/v2/models/demand/infer", json=_v2_body([OK], seq, start=True))
        assert first.status_code == 200, first.text
        body = _v2_body(rows, seq)
        if what == "ragged rows" or what == "no steps":  # v2 carries a shape: make the data disagree with it
            body["inputs"][0]["shape"] = [1, 2, 3]
        r = await client.post("/v2/models/demand/infer", json=body)
        assert r.status_code == status, r.text
        if what not in ("ragged rows", "no steps", "too few features"):
            assert words in r.json()["error"], r.text
        # the sequence is where it was: the next good step equals the offline run of [OK, OK]
        again = await client.post("/v2/models/demand/infer", json=_v2_body([OK], seq))
        ref = await client.post("/v1/models/demand/predict", json={"inputs": [[OK, OK]]})
        assert again.json()["outputs"][0]["data"] == pytest.approx(ref.json()["outputs"][0][1], rel=1e-6)


async def test_v2_binary_refuses_non_finite_and_out_of_range(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for rows, words in (
            ([[np.nan, 8.0, 2.0]], "NaN or infinite"),
            ([[30500.0, 99.0, 2.0]], "hour_of_day must be within"),
        ):
            raw = np.asarray([rows], "<f4").tobytes()
            head = orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "datatype": "FP32",
                            "shape": [1, len(rows), 3],
                            "parameters": {"binary_data_size": len(raw)},
                        }
                    ]
                }
            )
            r = await client.post(
                "/v2/models/demand/infer",
                content=head + raw,
                headers={"Inference-Header-Content-Length": str(len(head))},
            )
            assert r.status_code == 400 and words in r.json()["error"], r.text


@pytest.mark.parametrize(("what", "raw", "status", "words"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_unreadable_bodies_get_the_same_status_everywhere(server, what, raw, status, words):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        for path in (f"/v1/sessions/{sid}/step", "/v1/models/demand/predict", "/v2/models/demand/infer"):
            r = await client.post(path, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == status and words in r.json()["error"], (path, r.text)
        assert (await _state(client, sid))[0] == 0


async def test_v1_refuses_a_body_that_is_not_json_by_content_type(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        good = json.dumps({"inputs": [OK]})
        for path in (f"/v1/sessions/{sid}/step", "/v1/models/demand/predict"):
            body = good if "step" in path else json.dumps({"inputs": [[OK]]})
            r = await client.post(path, content=body, headers={"content-type": "text/plain"})
            assert r.status_code == 415 and "must be JSON" in r.json()["error"], r.text
        assert (await _state(client, sid))[0] == 0
        # no content type at all is read as JSON (FastAPI's rule), so it runs
        r = await client.post(f"/v1/sessions/{sid}/step", content=good)
        assert r.status_code == 200 and r.json()["step"] == 1
        # v2 ignores Content-Type, as Triton does: the body's form comes from Inference-Header-Content-Length
        r = await client.post(
            "/v2/models/demand/infer", content=json.dumps(_v2_body([OK], None)), headers={"content-type": "text/plain"}
        )
        assert r.status_code == 200, r.text


def _raw_post(url: str, path: str, headers: list[str], chunks: list[bytes]) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(("\r\n".join([f"POST {path} HTTP/1.1", f"host: {host}", *headers]) + "\r\n\r\n").encode())
        for c in chunks:
            try:
                s.sendall(c)
            except (BrokenPipeError, ConnectionResetError):  # the server answered early and closed
                break
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, rest = data.split(b"\r\n\r\n", 1)
        hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in head.decode().split("\r\n")[1:])}
        while len(rest) < int(hdrs["content-length"]):
            rest += s.recv(65536)
        return int(head.split()[1]), json.loads(rest)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_over_limit_bodies_get_413_on_every_hot_route(server, chunked):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
    rows = random_steps(np.random.default_rng(0), 3000).tolist()  # about 4x the limit
    bodies = {
        f"/v1/sessions/{sid}/step": {"inputs": rows},
        "/v1/models/demand/predict": {"inputs": [rows]},
        "/v2/models/demand/infer": _v2_body(rows, None),
        "/v2/models/demand/versions/1/infer": _v2_body(rows, None),
    }
    for path, body in bodies.items():
        raw = json.dumps(body).encode()
        assert len(raw) > LIMIT
        if chunked:
            parts = [raw[i : i + 8192] for i in range(0, len(raw), 8192)]
            chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]
            headers = ["content-type: application/json", "transfer-encoding: chunked"]
        else:
            chunks = [raw]
            headers = ["content-type: application/json", f"content-length: {len(raw)}"]
        status, reply = _raw_post(server.url, path, headers, chunks)
        assert status == 413 and "over the limit" in reply["error"], (path, reply)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        assert (await _state(client, sid))[0] == 0


async def test_websocket_refuses_bad_frames_alike_and_keeps_state(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
    ws_url = server.url.replace("http", "ws") + f"/v1/sessions/{sid}/stream"
    async with websockets.connect(ws_url) as ws:
        for what, rows, status, words in BAD_VALUES:
            await ws.send(json.dumps({"inputs": rows, "id": what}))
            reply = json.loads(await ws.recv())
            assert reply["status"] == status and words in reply["error"], (what, reply)
        for what, raw, status, words in BAD_BODIES:
            await ws.send(raw.decode())
            reply = json.loads(await ws.recv())
            assert reply["status"] == status and words in reply["error"], (what, reply)
        for rows, words in (([[np.nan, 8.0, 2.0]], "NaN or infinite"), ([[30500.0, 8.0, 9.0]], "day_of_week")):
            await ws.send(np.asarray(rows, "<f4").tobytes())
            reply = json.loads(await ws.recv())
            assert reply["status"] == 400 and words in reply["error"], reply
        await ws.send(np.asarray([OK], "<f4").tobytes())
        step = struct.unpack("<Q", (await ws.recv())[:8])[0]
    assert step == 1, "no bad frame moved the session"


BAD_SESSION_BODIES = [
    ("model missing", {}, "model is required"),
    ("model a number", {"model": 5}, "model is required: a served model's name, a string; got a number"),
    ("version a number", {"model": "demand", "version": 1}, "version must be a string; got a number"),
    ("unknown field", {"model": "demand", "h": [[0.0]]}, "unknown field(s) ['h']"),
    ("h0 of strings", {"model": "demand", "h0": [["0"]]}, "h0 must hold numbers only; got a string"),
    ("h0 of the wrong shape", {"model": "demand", "h0": [[0.0, 0.0]], "c0": [[0.0, 0.0]]}, "h0 must have shape"),
]


@pytest.mark.parametrize(("what", "body", "words"), BAD_SESSION_BODIES, ids=[c[0] for c in BAD_SESSION_BODIES])
async def test_session_create_and_import_take_the_one_decoder(server, what, body, words):
    """Session create and import are decoded by the decoder every route uses (no second
    validator before it): every bad body is 400 naming the field."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.post("/v1/sessions", json=body)
        assert r.status_code == 400 and words in r.json()["error"], r.text
        sid = await create(client)
        snap = (await client.get(f"/v1/sessions/{sid}/snapshot")).json()
        for bad, why in (
            ({**snap, "model": 5}, "snapshot model must be a string; got a number"),
            ({**snap, "step": 2**53}, "snapshot step must be an integer from 0 to 2**53 - 1"),
            ({**snap, "h": "zeros"}, "h must be a list of time steps"),
            ({**snap, "extra": 1}, "unknown field(s) ['extra']"),
        ):
            r = await client.post("/v1/sessions/import", json=bad)
            assert r.status_code == 400 and why in r.json()["error"], (why, r.text)
        r = await client.post(
            "/v1/sessions", content=json.dumps({"model": "demand"}), headers={"content-type": "text/plain"}
        )
        assert r.status_code == 415, r.text
        ok = await client.post("/v1/sessions/import", json={**snap, "step": 2**53 - 1})
        assert ok.status_code == 201 and ok.json()["step"] == 2**53 - 1, ok.text
