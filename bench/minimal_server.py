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
``python -m bench.minimal_server --model-dir DIR --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httptools
import numpy as np
import onnxruntime as ort
import orjson
import uvloop

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
        self.running = False
        if self.pending:
            self.start()  # the next batch runs while these replies are written
        ys = fut.result() if fut.exception() is None else [None] * len(batch)
        for (slot, _, done, end_key), y in zip(batch, ys, strict=True):
            if end_key is not None and self.slots.pop(end_key, None) == slot:
                self.free.append(slot)
            done(y)


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


async def serve(model_dir: Path, port: int, capacity: int) -> None:
    m = Model(model_dir, capacity)
    server = await asyncio.get_running_loop().create_server(lambda: Http(m), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.minimal_server", description=__doc__)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--port", type=int, default=8002)
    p.add_argument("--capacity", type=int, default=4096, help="sequence slots")
    a = p.parse_args()
    uvloop.run(serve(a.model_dir, a.port, a.capacity))


if __name__ == "__main__":
    main()
