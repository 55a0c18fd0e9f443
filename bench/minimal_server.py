"""The limit in the benchmark: the least a Python process must do per sequence step, with no
guarantees (no validation beyond the shape, no deadlines, queue limits, retries, session
expiry, metrics, auth or logs; v1 sessions are never freed).

uvloop, an ``asyncio.Protocol`` with httptools' parser, orjson. Every sequence's (h, C) is a
slot of one preallocated float32 array (assigned at the sequence's first request, freed at its
END); the requests that arrive while a batch runs make the next batch: one onnxruntime call
(rows gathered by index, states scattered back) in one worker thread. Routes: v2 infer with a
JSON ``x`` of one reading and ``sequence_id``/``sequence_start``/``sequence_end``; v1 session
create and step (one reading); ``GET /v2/health/ready`` and ``/live``. A connection's requests run one after
another (pipelined ones in order); a sequence must have one request in flight at a time.
With ``--grpc-port`` (or ``$LSTM_GRPC_PORT``), also gRPC (grpc.aio), requests of one raw FP32
reading: unary ``ModelInfer`` (one in flight per sequence) and ``ModelStreamInfer`` (many in
flight per sequence, each sequence's next step submitted when the one before has its reply,
every reply a ``raw_output_contents`` of its own).
``python -m bench.minimal_server --model-dir DIR --port P [--grpc-port G]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import itertools
import json
import os
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httptools
import numpy as np
import onnxruntime as ort
import orjson
import uvloop

from service.api.grpc.protos import service_pb2 as pb

REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 429: b"Too Many Requests", 500: b"Error"}
Job = tuple[int, list[float], Callable[[Any], None], object]  # slot, reading, reply with y, END's key
FULL, FAILED = (429, {"error": "no free sequence slot"}), (500, {"error": "inference failed"})


class Model:
    def __init__(self, model_dir: Path, capacity: int) -> None:
        card = json.loads((model_dir / "model.json").read_text())
        self.name, self.version = card["name"], card["version"]
        self.infer_url = f"/v2/models/{self.name}/infer".encode()
        self.x, self.y = card["inputs"][0]["name"], card["outputs"][0]["name"]
        self.state_in, self.state_out = card["state"]["inputs"], card["state"]["outputs"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        # (h, C) of every slot: [2, layers, capacity, hidden], the batch axis of h0/c0 being the slot
        self.state = np.zeros((2, card["num_layers"], capacity, card["hidden_size"]), np.float32)
        self.free, self.slots = list(range(capacity - 1, -1, -1)), dict[object, int]()
        self.pending, self.running = list[Job](), False
        self.pool, self.ids = ThreadPoolExecutor(1), itertools.count()

    def slot(self, key: object, start: bool) -> int | None:
        """The slot of sequence ``key``, zeroed when it starts (a new key starts)."""
        s = self.slots.get(key)
        if s is None:
            if not self.free:
                return None
            s = self.slots[key] = self.free.pop()
            start = True
        if start:
            self.state[:, :, s] = 0.0
        return s

    def submit(self, slot: int, x: list[float], done: Callable[[Any], None], end_key: object = None) -> None:
        self.pending.append((slot, x, done, end_key))
        if not self.running:
            self.start()

    def start(self) -> None:
        batch, self.pending, self.running = self.pending, [], True
        fut = asyncio.get_running_loop().run_in_executor(self.pool, self.run, batch)
        fut.add_done_callback(lambda f: self.finish(batch, f))

    def run(self, batch: list[Job]) -> np.ndarray:
        idx = np.fromiter((b[0] for b in batch), np.intp, len(batch))
        s = self.state[:, :, idx]  # gathered: [2, layers, batch, hidden]
        x = np.array([b[1] for b in batch], np.float32)[:, None]
        y, hn, cn = self.sess.run(
            [self.y, *self.state_out], {self.x: x, self.state_in[0]: s[0], self.state_in[1]: s[1]}
        )
        self.state[0][:, idx], self.state[1][:, idx] = hn, cn
        return y[:, 0, 0]

    def finish(self, batch: list[Job], fut: asyncio.Future) -> None:
        overlap = bool(self.pending)
        if overlap:
            self.start()  # the next batch runs while these replies are written
        self.running = True  # the steps these replies submit (a stream's next) wait for one batch
        ys = fut.result() if fut.exception() is None else [None] * len(batch)
        for (slot, _, done, end_key), y in zip(batch, ys, strict=True):
            if end_key is not None and self.slots.pop(end_key, None) == slot:
                self.free.append(slot)
            done(y)
        if not overlap:
            self.running = False
            if self.pending:
                self.start()


GrpcJob = tuple[int, list[float], str, bool, bool]  # sequence id, reading, request id, start, end


def grpc_job(r: Any) -> GrpcJob:
    """A ``ModelInferRequest`` of one raw FP32 reading of a sequence; ValueError or IndexError if not."""
    p = r.parameters
    x = np.frombuffer(r.raw_input_contents[0], "<f4").tolist()
    if len(x) != 3:
        raise ValueError("one reading of 3 features per request")
    return p["sequence_id"].int64_param, x, r.id, p["sequence_start"].bool_param, p["sequence_end"].bool_param


def grpc_reply(m: Model, rid: str, y: Any, into: Any) -> Any:
    """``y`` (None: no output) written into the ``ModelInferResponse`` ``into``."""
    into.model_name, into.model_version, into.id = m.name, m.version, rid
    if y is not None:
        into.outputs.add(name=m.y, datatype="FP32", shape=(1, 1, 1))
        into.raw_output_contents.append(struct.pack("<f", y))
    return into


async def infer(m: Model, r: Any, context: Any) -> Any:
    """Unary ``ModelInfer``: one reading of a sequence (one in flight per sequence)."""
    try:
        key, x, rid, start, end = grpc_job(r)
    except (ValueError, IndexError) as e:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{type(e).__name__}: {e}")
    slot = m.slot(key, start)
    if slot is None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, FULL[1]["error"])
    done = asyncio.get_running_loop().create_future()
    m.submit(slot, x, lambda y: done.done() or done.set_result(y), key if end else None)  # done: the caller left
    if (y := await done) is None:
        await context.abort(grpc.StatusCode.INTERNAL, FAILED[1]["error"])
    return grpc_reply(m, rid, y, pb.ModelInferResponse())


class Stream:
    """One ``ModelStreamInfer`` call: raw FP32 readings of one or several sequences. Each
    sequence's next step goes to the model once the one before has its reply (a slot holds one
    step at a time), so its replies come in order; every reply is its step's own. A message
    that cannot be read is answered at once with an error (no order kept for it)."""

    def __init__(self, m: Model) -> None:
        self.m, self.out = m, asyncio.Queue[Any]()
        self.waiting: dict[object, collections.deque[GrpcJob]] = {}
        self.received = self.answered = 0
        self.reading = True

    async def read(self, requests: Any) -> None:
        async for r in requests:
            self.received += 1
            try:
                job = grpc_job(r)
            except (ValueError, IndexError) as e:
                self.reply(r.id, None, f"{type(e).__name__}: {e}")
                continue
            key = job[0]
            q = self.waiting.get(key)
            if q is not None:
                q.append(job)  # submitted when the step before it has its reply
            else:
                self.waiting[key] = collections.deque([job])
                self.submit(job)
        self.reading = False
        if self.answered == self.received:
            self.out.put_nowait(None)

    def submit(self, job: GrpcJob) -> None:
        key, x, rid, start, end = job
        slot = self.m.slot(key, start)
        if slot is None:
            return self.done(key, rid, None, FULL[1]["error"])
        self.m.submit(slot, x, lambda y: self.done(key, rid, y, FAILED[1]["error"]), key if end else None)

    def done(self, key: object, rid: str, y: Any, error: str) -> None:
        self.reply(rid, y, error)
        q = self.waiting[key]
        q.popleft()
        if q:
            self.submit(q[0])
        else:
            del self.waiting[key]

    def reply(self, rid: str, y: Any, error: str) -> None:
        r = pb.ModelStreamInferResponse()
        if y is None:
            r.error_message = error
        grpc_reply(self.m, rid, y, r.infer_response)
        self.out.put_nowait(r)
        self.answered += 1
        if not self.reading and self.answered == self.received:
            self.out.put_nowait(None)


async def stream_infer(m: Model, requests: Any, context: Any) -> Any:
    s = Stream(m)
    reader = asyncio.ensure_future(s.read(requests))
    try:
        while (r := await s.out.get()) is not None:
            yield r
    finally:
        reader.cancel()


def grpc_server(m: Model, port: int) -> grpc.aio.Server:
    """``ModelInfer`` and ``ModelStreamInfer`` on ``port``."""
    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            functools.partial(infer, m),
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelInferResponse.SerializeToString,
        ),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
            functools.partial(stream_infer, m),
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    return server


class Http(asyncio.Protocol):
    def __init__(self, m: Model) -> None:
        self.m, self.parser = m, httptools.HttpRequestParser(self)
        self.todo = collections.deque[tuple[bytes, bytes, bytes, bool]]()  # method, url, body, keep-alive
        self.busy = self.pumping = False

    def connection_made(self, transport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.t.close()

    def on_message_begin(self) -> None:
        self.url, self.body = b"", list[bytes]()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.todo.append((self.parser.get_method(), self.url, b"".join(self.body), self.parser.should_keep_alive()))
        self.pump()

    def pump(self) -> None:
        """The next request once the one before has its reply (a loop, not a recursion, for pipelining)."""
        if not self.pumping:
            self.pumping = True
            while self.todo and not self.busy:
                self.next()
            self.pumping = False

    def reply(self, status: int, obj: object, keep: bool) -> None:
        body = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        if not self.t.is_closing():
            self.t.write(head % (status, REASONS[status], len(body)) + body)
            if not keep:
                self.t.close()
        self.busy = False
        self.pump()

    def next(self) -> None:
        self.busy = True
        method, url, body, keep = self.todo.popleft()
        m, end = self.m, None
        try:
            if method == b"POST" and url == m.infer_url:
                r = orjson.loads(body)
                p, x = r["parameters"], one(r["inputs"][0]["data"])
                key = p["sequence_id"]
                head = {"model_name": m.name, "model_version": m.version, **({"id": r["id"]} if "id" in r else {})}
                slot, end = m.slot(key, bool(p.get("sequence_start"))), key if p.get("sequence_end") else None

                def out(y: float) -> dict:
                    return {**head, "outputs": [{"name": m.y, "datatype": "FP32", "shape": [1, 1, 1], "data": [y]}]}

            elif method == b"POST" and url.startswith(b"/v1/sessions/") and url.endswith(b"/step"):
                sid, x = url[13:-5].decode(), one(orjson.loads(body)["inputs"])
                if (slot := m.slots.get(sid)) is None:
                    return self.reply(404, {"error": "unknown session"}, keep)

                def out(y: float) -> dict:
                    return {"session_id": sid, "outputs": [[y]]}

            elif method == b"POST" and url == b"/v1/sessions":
                sid = f"{m.name}.{m.version}.{next(m.ids)}"
                return self.reply(*((200, {"session_id": sid}) if m.slot(sid, True) is not None else FULL), keep)
            elif method == b"GET" and url in (b"/v2/health/ready", b"/v2/health/live"):
                return self.reply(200, {}, keep)
            else:
                return self.reply(404, {"error": "not found"}, keep)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            return self.reply(400, {"error": f"{type(e).__name__}: {e}"}, keep)
        if slot is None:
            return self.reply(*FULL, keep)
        m.submit(slot, x, lambda y: self.reply(200, out(y), keep) if y is not None else self.reply(*FAILED, keep), end)


def one(data: list) -> list[float]:
    """One reading of 3 features from ``[a, b, c]`` or the same nested (``[[a, b, c]]``)."""
    while len(data) == 1 and isinstance(data[0], list):
        data = data[0]
    if len(data) != 3:
        raise ValueError("one reading of 3 features per request")
    return [float(v) for v in data]


async def serve(model_dir: Path, port: int, grpc_port: int | None, capacity: int) -> None:
    m = Model(model_dir, capacity)
    streams = grpc_server(m, grpc_port) if grpc_port is not None else None  # held: a dropped server stops
    if streams is not None:
        await streams.start()
    server = await asyncio.get_running_loop().create_server(lambda: Http(m), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.minimal_server", description=__doc__)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--port", type=int, default=8002)
    p.add_argument(
        "--grpc-port",
        type=int,
        default=int(os.environ["LSTM_GRPC_PORT"]) if "LSTM_GRPC_PORT" in os.environ else None,
        help="serve ModelInfer and ModelStreamInfer here too (default: $LSTM_GRPC_PORT, else none)",
    )
    p.add_argument("--capacity", type=int, default=4096, help="sequence slots")
    a = p.parse_args()
    uvloop.run(serve(a.model_dir, a.port, a.grpc_port, a.capacity))


if __name__ == "__main__":
    main()
