"""A closed-loop load generator on raw asyncio HTTP/1.1 keep-alive connections (and
WebSockets), light enough that one process loads the server harder than httpx would.

``python -m bench.loadgen --url http://127.0.0.1:8000 --scenario rest-step -c 64 -d 15``
prints one JSON object: requests, steps, errors by status, throughput, latency percentiles,
and the client's own CPU seconds.

Scenarios (one time step per request unless said):
  naive      POST /predict on bench.naive_server, the client carrying (h, C)
  predict    stateless POST /v1/models/{m}/predict
  rest-step  one session per connection, POST /v1/sessions/{id}/step
  v2-binary  one sequence per connection, v2 infer with binary tensors
  v2-json    one sequence per connection, v2 infer with JSON tensors, naming no outputs
  ws         one session per connection over WebSocket binary frames, --window in flight
  chunked    one session per connection, --steps steps per request
  grpc-unary one sequence per gRPC channel, ModelInfer with raw tensors (--url is host:port of gRPC)
  grpc-stream one sequence per channel on one ModelStreamInfer call, --window in flight

The gRPC scenarios send pre-serialized protobuf and read replies as bytes (checking only
whether a stream reply is an error), as the HTTP scenarios read only the status line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import resource
import time
from collections import Counter
from urllib.parse import urlparse

import numpy as np
import orjson

FEATURES = 3


def reading(t: int) -> list[float]:
    return [28_000.0 + 6_000.0 * float(np.sin(t / 7.6)), (t % 48) / 2.0, float((t // 48) % 7)]


class Conn:
    """One HTTP/1.1 keep-alive connection with just enough parsing for our replies."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def open(self) -> None:
        self.r, self.w = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        h = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        h += "".join(f"{k}: {v}\r\n" for k, v in (headers or {"Content-Type": "application/json"}).items())
        self.w.write(h.encode() + b"\r\n" + body)
        head = await self.r.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        n = int(hdrs.get("content-length", "0"))
        return status, hdrs, await self.r.readexactly(n) if n else b""

    def close(self) -> None:
        self.w.close()


class Stats:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.codes: Counter[int] = Counter()
        self.steps = 0
        self.reply_bytes = 0
        self.recording = False

    def add(self, dt: float, status: int, steps: int, reply_bytes: int = 0) -> None:
        if self.recording:
            self.lat.append(dt)
            self.codes[status] += 1
            self.reply_bytes += reply_bytes
            if status == 200:
                self.steps += steps


async def http_worker(args: argparse.Namespace, k: int, stats: Stats, stop: asyncio.Event) -> None:
    u = urlparse(args.url)
    c = Conn(u.hostname or "127.0.0.1", u.port or 80)
    await c.open()
    m = args.model
    steps = args.steps if args.scenario == "chunked" else 1
    t = k * 1000
    if args.scenario in ("rest-step", "chunked"):
        _, _, body = await c.request("POST", "/v1/sessions", orjson.dumps({"model": m}))
        sid = orjson.loads(body)["session_id"]
    state = {"h0": [[[0.0] * args.hidden]] * args.layers, "c0": [[[0.0] * args.hidden]] * args.layers}
    seq_id = 10_000 + k
    first = True
    while not stop.is_set():
        xs = [reading(t + i) for i in range(steps)]
        t0 = time.perf_counter()
        if args.scenario == "naive":
            st, _, body = await c.request("POST", "/predict", orjson.dumps({"x": [xs], **state}))
            if st == 200:
                r = orjson.loads(body)
                state = {"h0": r["hn"], "c0": r["cn"]}
        elif args.scenario == "predict":
            st, _, body = await c.request("POST", f"/v1/models/{m}/predict", orjson.dumps({"inputs": [xs]}))
        elif args.scenario in ("rest-step", "chunked"):
            st, _, body = await c.request("POST", f"/v1/sessions/{sid}/step", orjson.dumps({"inputs": xs}))
        elif args.scenario == "v2-json":
            req = {
                "inputs": [{"name": "x", "shape": [1, steps, FEATURES], "datatype": "FP32", "data": xs}],
                "parameters": {"sequence_id": seq_id, "sequence_start": first},
            }
            st, _, body = await c.request("POST", f"/v2/models/{m}/infer", orjson.dumps(req))
            first = False
        else:  # v2-binary
            head = orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": [1, steps, FEATURES],
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": 4 * steps * FEATURES},
                        }
                    ],
                    "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
                    "parameters": {"sequence_id": seq_id, "sequence_start": first},
                }
            )
            blob = np.asarray(xs, "<f4").tobytes()
            st, _, body = await c.request(
                "POST",
                f"/v2/models/{m}/infer",
                head + blob,
                {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
            )
            first = False
        stats.add(time.perf_counter() - t0, st, steps, len(body))
        t += steps
    if args.scenario in ("v2-json", "v2-binary") and not first:
        # end the sequence (not measured): a server that keeps per-sequence slots frees them now,
        # not after its idle timeout, so the next run starts from a clean batcher
        req = {
            "inputs": [{"name": "x", "shape": [1, 1, FEATURES], "datatype": "FP32", "data": [reading(t)]}],
            "parameters": {"sequence_id": seq_id, "sequence_end": True},
        }
        await c.request("POST", f"/v2/models/{m}/infer", orjson.dumps(req))
    c.close()


class RawWebSocket:
    """A minimal WebSocket client (binary frames only): the websockets library costs the
    client more CPU per message than the server spends, which would measure the client."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def connect(cls, host: str, port: int, path: str) -> RawWebSocket:
        r, w = await asyncio.open_connection(host, port)
        w.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await r.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"WebSocket upgrade refused: {head[:80]!r}")
        return cls(r, w)

    def send(self, payload: bytes) -> None:
        # a client frame must be masked; a zero mask leaves the payload as it is
        n = len(payload)
        head = bytes([0x82, 0x80 | n]) if n < 126 else bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
        self.w.write(head + b"\x00\x00\x00\x00" + payload)

    async def recv(self) -> tuple[int, bytes]:
        b0, b1 = await self.r.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.r.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.r.readexactly(8), "big")
        return b0 & 0x0F, await self.r.readexactly(n)


async def ws_worker(args: argparse.Namespace, k: int, stats: Stats, stop: asyncio.Event) -> None:
    u = urlparse(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    c = Conn(host, port)
    await c.open()
    _, _, body = await c.request("POST", "/v1/sessions", orjson.dumps({"model": args.model}))
    sid = orjson.loads(body)["session_id"]
    c.close()
    ws = await RawWebSocket.connect(host, port, f"/v1/sessions/{sid}/stream")
    sent: collections.deque[float] = collections.deque()
    t = k * 1000
    while not (stop.is_set() and not sent):
        while not stop.is_set() and len(sent) < args.window:
            sent.append(time.perf_counter())
            ws.send(np.asarray([reading(t)], "<f4").tobytes())
            t += 1
        opcode, msg = await asyncio.wait_for(ws.recv(), 30)
        t0 = sent.popleft()
        stats.add(time.perf_counter() - t0, 200 if opcode == 2 and len(msg) >= 8 else 400, 1)
    ws.w.close()


def infer_request(model: str, seq_id: int, first: bool, x: np.ndarray, last: bool = False) -> bytes:
    """A serialized ModelInferRequest: one step of a sequence, raw tensor, only ``y`` back;
    ``last`` ends the sequence (a server with sequence slots, as Triton's, frees its slot)."""
    from tritonclient.grpc import service_pb2 as pb

    r = pb.ModelInferRequest(model_name=model)
    r.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    r.raw_input_contents.append(np.ascontiguousarray(x, "<f4").tobytes())
    r.outputs.add(name="y")
    r.parameters["sequence_id"].int64_param = seq_id
    if first:
        r.parameters["sequence_start"].bool_param = True
    if last:
        r.parameters["sequence_end"].bool_param = True
    return r.SerializeToString()


GRPC_SERVICE = "/inference.GRPCInferenceService/"


async def grpc_unary_worker(args: argparse.Namespace, k: int, stats: Stats, stop: asyncio.Event) -> None:
    import grpc

    async with grpc.aio.insecure_channel(args.url.removeprefix("http://")) as ch:
        call = ch.unary_unary(GRPC_SERVICE + "ModelInfer")  # bytes in, bytes out
        t, first = k * 1000, True
        while not stop.is_set():
            body = infer_request(args.model, 20_000 + k, first, np.asarray([[reading(t)]]))
            t0 = time.perf_counter()
            try:
                await call(body, timeout=30)
                st = 200
            except grpc.aio.AioRpcError as e:
                st = 1000 + e.code().value[0]
            stats.add(time.perf_counter() - t0, st, 1)
            t, first = t + 1, False
        if not first:  # end the sequence (not counted)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call(
                    infer_request(args.model, 20_000 + k, False, np.asarray([[reading(t)]]), last=True), timeout=30
                )


async def grpc_stream_worker(args: argparse.Namespace, k: int, stats: Stats, stop: asyncio.Event) -> None:
    import grpc

    async with grpc.aio.insecure_channel(args.url.removeprefix("http://")) as ch:
        call = ch.stream_stream(GRPC_SERVICE + "ModelStreamInfer")()
        sent: collections.deque[float] = collections.deque()
        t, first = k * 1000, True
        while not (stop.is_set() and not sent):
            while not stop.is_set() and len(sent) < args.window:
                sent.append(time.perf_counter())
                await call.write(infer_request(args.model, 30_000 + k, first, np.asarray([[reading(t)]])))
                t, first = t + 1, False
            msg = await asyncio.wait_for(call.read(), 30)
            t0 = sent.popleft()
            # field 1 (error_message) first means an error reply; a reply starts with field 2
            stats.add(time.perf_counter() - t0, 400 if msg[:1] == b"\n" else 200, 1)
        if not first:  # end the sequence (not counted)
            await call.write(infer_request(args.model, 30_000 + k, False, np.asarray([[reading(t)]]), last=True))
            await asyncio.wait_for(call.read(), 30)
        await call.done_writing()


async def run(args: argparse.Namespace) -> dict:
    stats = Stats()
    stop = asyncio.Event()
    worker = {"ws": ws_worker, "grpc-unary": grpc_unary_worker, "grpc-stream": grpc_stream_worker}.get(
        args.scenario, http_worker
    )
    tasks = [asyncio.ensure_future(worker(args, k, stats, stop)) for k in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    stats.recording = True
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.sleep(args.duration)
    stats.recording = False
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    for t in tasks:
        if t.done() and t.exception() and not isinstance(t.exception(), (ConnectionError, asyncio.IncompleteReadError)):
            raise t.exception()  # type: ignore[misc]
    lat = np.asarray(stats.lat) * 1000 if stats.lat else np.zeros(1)
    ok = stats.codes.get(200, 0)
    return {
        "scenario": args.scenario,
        "concurrency": args.concurrency,
        "duration_s": round(elapsed, 3),
        "requests": int(sum(stats.codes.values())),
        "ok": ok,
        "errors": {str(k): v for k, v in stats.codes.items() if k != 200},
        "req_per_s": ok / elapsed,
        "steps_per_s": stats.steps / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p90_ms": float(np.percentile(lat, 90)),
        "p99_ms": float(np.percentile(lat, 99)),
        "reply_bytes_mean": stats.reply_bytes / max(1, sum(stats.codes.values())),
        "client_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", required=True)
    p.add_argument(
        "--scenario",
        required=True,
        choices=["naive", "predict", "rest-step", "v2-binary", "v2-json", "ws", "chunked", "grpc-unary", "grpc-stream"],
    )
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("-d", "--duration", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--model", default="demand")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=64, help="steps per request (chunked)")
    p.add_argument("--window", type=int, default=8, help="frames in flight per WebSocket")
    args = p.parse_args()
    try:
        import uvloop

        if not args.scenario.startswith("grpc"):  # grpc.aio runs on the standard event loop
            uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    print(json.dumps(result))
    if result["ok"] == 0:
        raise SystemExit(f"no request succeeded: {result['errors'] or 'could not connect?'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
