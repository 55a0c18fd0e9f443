"""The benchmark's minimal reference server (``bench/minimal_server.py``) is exact: sequences
streamed one reading per request from concurrent connections, or all in flight at once on
one ``ModelStreamInfer`` call -- batched together on the server -- give what one offline
onnxruntime run over each whole sequence gives."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import grpc
import numpy as np
import orjson
import pytest

from bench.servers import serve
from harness.paths import DEFAULT_MODEL
from harness.reference import Offline, random_steps
from service.api.grpc.protos import service_pb2 as pb

pytestmark = pytest.mark.integration

STEPS = 20


def request(path: str, obj: object) -> bytes:
    body = orjson.dumps(obj)
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def reply(r: asyncio.StreamReader) -> dict:
    head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    assert head.startswith("http/1.1 200"), head
    n = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
    return orjson.loads(await r.readexactly(n))


async def v2_sequence(url: str, seq_id: int, xs: np.ndarray) -> list[float]:
    """One request at a time on a connection of its own, END on the last."""
    r, w = await asyncio.open_connection(urlparse(url).hostname, urlparse(url).port)
    ys = []
    for t, x in enumerate(xs.tolist()):
        params = {"sequence_id": seq_id, "sequence_start": t == 0, "sequence_end": t == len(xs) - 1}
        w.write(request("/v2/models/demand/infer", {"inputs": [{"data": [x]}], "parameters": params}))
        out = (await reply(r))["outputs"]
        assert [(o["name"], o["shape"]) for o in out] == [("y", [1, 1, 1])]
        ys.append(out[0]["data"][0])
    w.close()
    return ys


async def v1_session_pipelined(url: str, xs: np.ndarray) -> list[float]:
    """A session's steps written all at once on one connection: the replies come in order."""
    r, w = await asyncio.open_connection(urlparse(url).hostname, urlparse(url).port)
    w.write(request("/v1/sessions", {"model": "demand"}))
    sid = (await reply(r))["session_id"]
    w.write(b"".join(request(f"/v1/sessions/{sid}/step", {"inputs": [x]}) for x in xs.tolist()))
    ys = [(await reply(r))["outputs"][0][0] for _ in xs]
    w.close()
    return ys


def test_interleaved_sequences_match_one_offline_run():
    rng = np.random.default_rng(21)
    xs = [random_steps(rng, STEPS) for _ in range(3)]
    offline = Offline(DEFAULT_MODEL)
    with serve("minimal", DEFAULT_MODEL) as p:

        async def streams() -> list[list[float]]:
            return list(
                await asyncio.gather(
                    v2_sequence(p.url, 7, xs[0]), v2_sequence(p.url, 8, xs[1]), v1_session_pipelined(p.url, xs[2])
                )
            )

        got = asyncio.run(streams())
        again = asyncio.run(v2_sequence(p.url, 7, xs[1][:5]))  # id 7 ended: it starts from zeros again
    for g, x in zip([*got, again], [*xs, xs[1][:5]], strict=True):
        want = offline.run(x)[0][:, 0]
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=0)
        offline.assert_outputs_close(g, want)


def grpc_request(sid: int, xs: np.ndarray, t: int) -> pb.ModelInferRequest:
    """Reading ``t`` of sequence ``sid``, raw, START on the first, END on the last."""
    r = pb.ModelInferRequest(model_name="demand", id=f"{sid}:{t}")
    r.inputs.add(name="x", datatype="FP32", shape=[1, 1, 3])
    r.raw_input_contents.append(xs[t].astype("<f4").tobytes())
    r.parameters["sequence_id"].int64_param = sid
    r.parameters["sequence_start"].bool_param = t == 0
    r.parameters["sequence_end"].bool_param = t == len(xs) - 1
    return r


def y_of(r: pb.ModelInferResponse) -> float:
    return float(np.frombuffer(r.raw_output_contents[0], "<f4")[0])


async def grpc_unary(target: str, sid: int, xs: np.ndarray) -> list[float]:
    """One ``ModelInfer`` call per reading, one at a time."""
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return [y_of(await call(grpc_request(sid, xs, t))) for t in range(len(xs))]


async def grpc_stream(target: str, seqs: dict[int, np.ndarray]) -> dict[int, list[float]]:
    """Every reading of every sequence written at once on one call, the sequences interleaved."""
    n = max(len(x) for x in seqs.values())
    msgs = [grpc_request(sid, xs, t) for t in range(n) for sid, xs in seqs.items() if t < len(xs)]
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )(iter(msgs))
        got: dict[int, list[float]] = {sid: [] for sid in seqs}
        async for m in call:
            assert not m.error_message, m.error_message
            sid, t = map(int, m.infer_response.id.split(":"))
            assert t == len(got[sid])  # a sequence's replies come in order
            got[sid].append(y_of(m.infer_response))
    return got


def test_grpc_sequences_in_flight_match_one_offline_run():
    """Three sequences all in flight on one ``ModelStreamInfer`` call, a fourth over unary calls."""
    rng = np.random.default_rng(22)
    seqs = {11: random_steps(rng, STEPS), 12: random_steps(rng, STEPS // 2), 13: random_steps(rng, STEPS)}
    unary = random_steps(rng, STEPS)
    offline = Offline(DEFAULT_MODEL)
    with serve("minimal", DEFAULT_MODEL) as p:

        async def both() -> tuple[dict[int, list[float]], list[float]]:
            return await asyncio.gather(grpc_stream(p.grpc, seqs), grpc_unary(p.grpc, 14, unary))

        got, by_unary = asyncio.run(both())
    got[14] = by_unary
    for sid, x in {**seqs, 14: unary}.items():
        want = offline.run(x)[0][:, 0]
        np.testing.assert_allclose(got[sid], want, rtol=1e-5, atol=0)
        offline.assert_outputs_close(got[sid], want)
