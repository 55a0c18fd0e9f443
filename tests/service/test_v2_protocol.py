"""Open Inference Protocol v2 with the real tritonclient.http client."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.service.conftest import random_steps

pytestmark = pytest.mark.integration


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(server.url.removeprefix("http://"), connection_timeout=30, network_timeout=30)
    yield c
    c.close()


def x_input(x: np.ndarray, binary: bool) -> httpclient.InferInput:
    i = httpclient.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(np.ascontiguousarray(x, np.float32), binary_data=binary)
    return i


def test_server_and_model_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert {"binary_tensor_data", "sequence", "model_configuration", "statistics"} <= set(meta["extensions"])
    assert client.is_model_ready("demand") and client.is_model_ready("demand", "1")
    assert not client.is_model_ready("nope")
    m = client.get_model_metadata("demand", "1")
    assert m["name"] == "demand" and m["versions"] == ["1"] and m["platform"] == "onnxruntime_onnx"
    # the state is implicit (kept by the server), as Triton shows it: x in, y out
    assert {i["name"]: i["shape"] for i in m["inputs"]} == {"x": [-1, -1, 3]}
    assert {o["name"]: (o["datatype"], o["shape"]) for o in m["outputs"]} == {"y": ("FP32", [-1, -1, 1])}


@pytest.mark.parametrize("binary", [False, True])
def test_stateless_infer_json_and_binary(client, offline, binary):
    rng = np.random.default_rng(0)
    x = np.stack([random_steps(rng, 20, start=0) for _ in range(3)])
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("y", "hn")]
    res = client.infer("demand", [x_input(x, binary)], outputs=outputs, request_id="req-7")
    assert res.get_response()["id"] == "req-7"
    assert res.as_numpy("cn") is None  # only what was asked for
    for b in range(3):
        want, state = offline.run(x[b])
        offline.assert_outputs_close(res.as_numpy("y")[b], want)
        assert np.max(np.abs(res.as_numpy("hn")[:, b] - state[0])) <= 1e-5
    # no outputs named: tritonclient asks for all of them as binary
    res = client.infer("demand", [x_input(x, binary)], model_version="1")
    assert res.as_numpy("y").shape == (3, 20, 1) and res.as_numpy("cn").shape == (offline.layers, 3, offline.hidden)


def test_client_carried_state_continues_a_stream(client, offline):
    x = random_steps(np.random.default_rng(1), 30)[None]
    first = client.infer("demand", [x_input(x[:, :12], True)])
    h0 = httpclient.InferInput("h0", [offline.layers, 1, offline.hidden], "FP32")
    h0.set_data_from_numpy(first.as_numpy("hn"))
    c0 = httpclient.InferInput("c0", [offline.layers, 1, offline.hidden], "FP32")
    c0.set_data_from_numpy(first.as_numpy("cn"), binary_data=False)
    second = client.infer("demand", [x_input(x[:, 12:], True), h0, c0])
    want, _ = offline.run(x[0])
    offline.assert_outputs_close(np.concatenate([first.as_numpy("y")[0], second.as_numpy("y")[0]]), want)


def test_16_sequences_from_threads_equal_offline_runs(server, offline):
    rng = np.random.default_rng(2)
    seqs = [random_steps(rng, int(rng.integers(10, 120))) for _ in range(16)]
    chunks = [[int(c) for c in rng.integers(1, 12, 60)] for _ in range(16)]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def stream(k: int) -> None:
        c = httpclient.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)
        try:
            x, outs, t = seqs[k], [], 0
            seq_id = 1000 + k if k % 2 else f"stream-{k}"  # uint64 and string ids
            for n in chunks[k]:
                part = x[t : t + n]
                end = t + len(part) >= len(x)
                res = c.infer(
                    "demand",
                    [x_input(part[None], k % 3 != 0)],
                    sequence_id=seq_id,
                    sequence_start=t == 0,
                    sequence_end=end,
                )
                outs.append(res.as_numpy("y")[0])
                t += len(part)
                if end:
                    break
            results[k] = np.concatenate(outs)
            # after sequence_end the same id without start is refused
            with pytest.raises(InferenceServerException, match="sequence_start"):
                c.infer("demand", [x_input(x[None, :1], True)], sequence_id=seq_id)
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[0]
    for k, x in enumerate(seqs):
        want, _ = offline.run(x)
        offline.assert_outputs_close(results[k], want)


def test_sequence_start_resets_the_state(client, offline):
    x = random_steps(np.random.default_rng(3), 8)
    client.infer("demand", [x_input(x[None, :5], True)], sequence_id=77, sequence_start=True)
    res = client.infer("demand", [x_input(x[None], True)], sequence_id=77, sequence_start=True, sequence_end=True)
    want, _ = offline.run(x)
    offline.assert_outputs_close(res.as_numpy("y")[0], want)


def _raw(server, path: str, body: bytes, header_len: int | None = None) -> httpx.Response:
    headers = {"content-type": "application/octet-stream"}
    if header_len is not None:
        headers["Inference-Header-Content-Length"] = str(header_len)
    return httpx.post(server.url + path, content=body, headers=headers)


def test_protocol_errors_are_4xx_and_change_no_sequence(server, client, offline):
    x = random_steps(np.random.default_rng(4), 6)
    first = client.infer("demand", [x_input(x[None, :3], True)], sequence_id="errs", sequence_start=True)
    good = {"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": x[3].tolist()}
    seq = {"sequence_id": "errs"}
    cases = [
        ("/v2/models/nope/infer", {"inputs": [good]}, 404, "not served"),
        ("/v2/models/demand/versions/9/infer", {"inputs": [good]}, 404, "no version"),
        (
            "/v2/models/demand/infer",
            {"inputs": [{**good, "datatype": "INT32", "data": [1, 2, 3]}], "parameters": seq},
            400,
            "FP32",
        ),
        ("/v2/models/demand/infer", {"inputs": [{**good, "datatype": "BYTES"}], "parameters": seq}, 400, "datatype"),
        ("/v2/models/demand/infer", {"inputs": [{**good, "shape": [1, 2, 3]}], "parameters": seq}, 400, "do not fill"),
        (
            "/v2/models/demand/infer",
            {"inputs": [{**good, "shape": [1, 1, 4], "data": [1, 2, 3, 4]}], "parameters": seq},
            400,
            "3 features",
        ),
        ("/v2/models/demand/infer", {"inputs": [{**good, "data": [1, "a", 3]}], "parameters": seq}, 400, "numbers"),
        ("/v2/models/demand/infer", {"inputs": [{**good, "name": "q"}], "parameters": seq}, 400, "unknown input"),
        (
            "/v2/models/demand/infer",
            {"inputs": [good], "outputs": [{"name": "z"}], "parameters": seq},
            400,
            "unknown output",
        ),
        ("/v2/models/demand/infer", {"inputs": [good], "parameters": {"sequence_id": 1.5}}, 400, "uint64"),
        ("/v2/models/demand/infer", {"inputs": [good], "parameters": {"sequence_id": "never"}}, 400, "sequence_start"),
    ]
    for path, body, status, words in cases:
        r = httpx.post(server.url + path, json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["error"], (body, r.text)
    import json as _json

    header = _json.dumps(
        {
            "inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}],
            "parameters": seq,
        }
    ).encode()
    blob = x[3].astype("<f4").tobytes()
    for body, hlen, words in [
        (header + blob, len(header) + 40, "does not fit"),
        (header + blob[:8], len(header), "runs past"),
        (header + blob + b"xx", len(header), "not claimed"),
        (header.replace(b"12", b"16") + blob + b"abcd", len(header), "does not match shape"),
        (b"{" + blob, 1, "not valid JSON"),
    ]:
        r = _raw(server, "/v2/models/demand/infer", body, hlen)
        assert r.status_code == 400 and words in r.json()["error"], (words, r.text)
    ok = _raw(server, "/v2/models/demand/infer", header + blob, len(header))
    assert ok.status_code == 200, ok.text
    y_next = np.asarray(ok.json()["outputs"][0]["data"], np.float32)
    want, _ = offline.run(x[:4])
    offline.assert_outputs_close(np.concatenate([first.as_numpy("y")[0, :, 0], y_next]), want[:, 0])
