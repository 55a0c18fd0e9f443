"""The service with one layer of its v2 sequence-step path taken away or replaced, for
``bench/layers.py``: what each layer costs, and what a leaner design would cost, measured on
the real server under the real load instead of estimated from a profile.

``python -m bench.layer_server LAYER [service arguments]``; LAYER is

- ``full``: the service as it is (``python -m service``; with gRPC off, its batches run on
  the event loop, bounded by ``LSTM_HTTP_INLINE_COMPUTE_US``);
- ``protocol``: uvicorn's HTTP protocol parses the request and the v2 infer route answers it
  at once with fixed bytes (no key check, decode, data plane, encode, log or metrics): the
  floor of any front built on this protocol;
- ``front``: the HTTP front as it is (keys, limits, request id, decode, the v2 checks' caller,
  encode, the access log and request metrics) with ``run_infer`` answering a fixed reply:
  the front's cost without the data plane;
- ``lean``: a prototype of the lean design (issue "the lean hot path"): the v2 infer route
  served from the protocol's callback with no task, coroutine chain or lock per request;
  every live sequence's state a slot of one preallocated array per model version, gathered
  and scattered by index; a per-sequence FIFO for the order; one list of pending steps per
  version, and one onnxruntime call per batch on the worker thread, started from the step
  that finds the runtime idle or from the batch that ends. It keeps the front's own work
  (the same decoder, checks, encoder, request ids, log and metrics) and the data plane's
  guarantees that a step touches: readiness, the model card's checks, the caller's key as
  the sequence's owner, ``expected_step`` with the replay of the last request by its
  digest, the deadline checked when the step is taken and again before its state is
  written (a late step writes nothing), per-sequence order, the last-use time, the steps,
  request and batch-size metrics once per batch. What it leaves out is what a step does
  not reach: stores other than memory, capacity, expiry sweeps, snapshots, drain waits,
  flow control of slow readers (a reply is written at once). v2 JSON sequence requests of
  one reading only; anything else goes to the service as usual;
- ``lean-inline``: the same, every batch run on the event loop's thread instead of the
  worker thread (on a machine whose cores the load generator shares, the hand-over between
  the threads can cost more than the overlap gains).

A prototype: it serves ``bench/layers.py``, nothing else. Its outputs are checked against
one offline onnxruntime run (``bench.triton_peer.check``) before it is measured.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import time
from typing import Any

import numpy as np
import orjson

LAYERS = ("full", "protocol", "front", "lean", "lean-inline")


class Sequence:
    """One live sequence of the lean prototype: its slot, step, owner, last reply, and the
    requests waiting behind the one in flight."""

    __slots__ = ("busy", "last_digest", "last_from", "last_out", "last_used", "owner", "slot", "step", "waiting")

    def __init__(self, slot: int, owner: str | None) -> None:
        self.slot, self.owner, self.step = slot, owner, 0
        self.last_from: int | None = None
        self.last_digest: bytes | None = None
        self.last_out: np.ndarray | None = None
        self.last_used = time.time()
        self.busy = False
        self.waiting: collections.deque[tuple] = collections.deque()


class Engine:
    """The lean prototype's data plane for one model version (see the module's docstring)."""

    def __init__(self, worker: Any, inline: bool, capacity: int = 4096) -> None:
        from service.metrics import Observer, adder

        c = worker.card
        self.worker = worker
        self.inline = inline  # every batch on the event loop, none on the worker thread
        self.arena = np.zeros((len(c.states), c.num_layers, capacity, c.hidden_size), np.float32)
        self.free = list(range(capacity - 1, -1, -1))
        self.sequences: dict[str, Sequence] = {}
        self.pending: list[tuple] = []
        self.running = False
        m, key = worker.metrics, c.key
        self.count_steps = adder(m.steps.labels(key))
        self.count_ok = adder(m.infer_requests.labels(key, "success"))
        self.batch_size = Observer(m.batch_size.labels(key))

    def sequence(self, sid: str, owner: str | None, start: bool) -> Sequence | None:
        s = self.sequences.get(sid)
        if start and s is None and self.free:
            s = self.sequences[sid] = Sequence(self.free.pop(), owner)
        if s is None or not (s.owner is None or s.owner == owner):
            return None
        if start:
            s.step, s.last_from = 0, None
            self.arena[:, :, s.slot] = 0.0
        return s

    def end(self, sid: str) -> None:
        s = self.sequences.pop(sid, None)
        if s is not None:
            self.free.append(s.slot)

    def submit(
        self, s: Sequence, x: np.ndarray, expected: int | None, digest: bytes, deadline: float
    ) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        job = (s, x, expected, digest, deadline, fut)
        if s.busy:
            s.waiting.append(job)
        else:
            s.busy = True
            self.pending.append(job)
            if not self.running:
                self.start()
        return fut

    def start(self) -> None:
        from service.core.work import StepResult
        from service.errors import DeadlineExceeded, StepConflict

        batch, self.pending = self.pending, []
        now = time.monotonic()
        run = []
        for job in batch:
            s, _, e, digest, deadline, fut = job
            if now >= deadline:
                fut.set_exception(DeadlineExceeded("the request's deadline passed before its step could run"))
            elif e is None or e == s.step:
                run.append(job)
                continue
            elif s.last_from == e and s.last_digest == digest:
                fut.set_result(StepResult("", s.last_out, s.step, True, self.arena[:, :, s.slot].copy()))
            else:
                fut.set_exception(StepConflict(f"expected_step {e}; the sequence is at {s.step}", current_step=s.step))
            self.release(s)
        if not run:
            return
        self.running = True
        idx = np.fromiter((j[0].slot for j in run), np.intp, len(run))
        x = np.stack([j[1] for j in run])
        state = self.arena[:, :, idx]
        loop = asyncio.get_running_loop()
        if self.inline:
            f = loop.create_future()
            f.set_result(self.worker.model.run(x, state, None))
            loop.call_soon(self.finish, run, idx, f)
            return
        f = loop.run_in_executor(self.worker._executor, self.worker.model.run, x, state, None)
        f.add_done_callback(lambda f: self.finish(run, idx, f))

    def finish(self, run: list[tuple], idx: np.ndarray, f: asyncio.Future) -> None:
        from service.core.work import StepResult
        from service.errors import DeadlineExceeded

        self.running = False
        y, state = f.result()
        now, wall = time.monotonic(), time.time()
        keep = [k for k, job in enumerate(run) if now < job[4]]
        if len(keep) == len(run):
            self.arena[:, :, idx] = state
        elif keep:
            self.arena[:, :, idx[keep]] = state[:, :, keep]
        kept = set(keep)
        for k, (s, _, _, digest, _, fut) in enumerate(run):
            if k not in kept:
                fut.set_exception(DeadlineExceeded("the request's deadline passed before its step was stored"))
                continue
            out = y[k].copy()
            s.last_from, s.last_digest, s.last_out = s.step, digest, out
            s.step += len(out)
            s.last_used = wall
            fut.set_result(StepResult("", out, s.step, False, None))
        self.count_steps(len(keep))
        self.count_ok(len(keep))
        self.batch_size(len(run))
        for job in run:
            self.release(job[0])
        if self.pending:
            self.start()

    def release(self, s: Sequence) -> None:
        if s.waiting:
            self.pending.append(s.waiting.popleft())
        else:
            s.busy = False


def install_protocol() -> None:
    from service.api.http import front as protocol

    canned = orjson.dumps(
        {
            "model_name": "demand",
            "model_version": "1",
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 1, 1], "data": [30000.5]}],
            "parameters": {"step": 1},
        }
    )
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(canned) + canned
    original = protocol.HotProtocol._start_asgi_task

    def start(self: Any, cycle: Any, app: Any) -> None:
        scope = cycle.scope
        if scope["method"] == "POST" and scope["path"].endswith("/infer"):
            cycle.transport.write(reply)
            cycle.response_started = cycle.response_complete = True
            cycle.message_event.set()
            cycle.on_response()
            cycle.on_response = lambda: None
            return
        original(self, cycle, app)

    protocol.HotProtocol._start_asgi_task = start  # type: ignore[method-assign]


def install_front() -> None:
    import service.api.http.v2 as v2
    from service.api.protocol.v2_codec import InferReply

    y = np.full((1, 1, 1), 30000.5, np.float32)

    async def canned(dp: Any, model: str, version: str | None, req: Any, owner: str | None) -> InferReply:
        return InferReply("demand", "1", {"y": y}, id=req.id, parameters={"step": 1})

    v2.run_infer = canned  # type: ignore[assignment]


def install_lean(inline: bool = False) -> None:
    from service.api.http import front as protocol
    from service.api.http.errors import error_reply
    from service.api.http.hot import HotReply
    from service.api.protocol.inference import check, sequence_id
    from service.api.protocol.model_config import split_view
    from service.api.protocol.v2_codec import InferReply, decode, encode
    from service.core import inputs
    from service.errors import InvalidInput, ServiceError
    from service.sessions.record import digest

    engines: dict[str, Engine] = {}
    original = protocol.HotProtocol._start_asgi_task
    completed = protocol.HotProtocol.on_message_complete

    def write(self: Any, cycle: Any, reply: HotReply, rid: str, t0: float, route: str) -> None:
        """The front's own reply writing (no wait for a slow reader: the prototype leaves flow control out)."""
        f = self.front
        f.send(cycle, reply, rid)
        cycle.on_response = lambda: None
        f.lifecycle.finished()
        scope = cycle.scope
        f.requests.record(scope["method"], scope["path"], route, reply.status, time.perf_counter() - t0, rid)

    def start(self: Any, cycle: Any, app: Any) -> None:
        scope = cycle.scope
        found = self.front.table.match(scope["method"], scope["path"]) if app is self.app else None
        if found is None or found[0].path != "/v2/models/{model}/infer":
            return original(self, cycle, app)
        if cycle.more_body:  # the head came first: served when the body is whole
            self.lean_waiting = (cycle, found)
            return
        serve(self, cycle, found)

    def message_complete(self: Any) -> None:
        completed(self)
        waiting = getattr(self, "lean_waiting", None)
        if waiting is not None and waiting[0] is self.cycle:
            self.lean_waiting = None
            serve(self, *waiting)

    def serve(self: Any, cycle: Any, found: tuple) -> None:
        f, scope = self.front, cycle.scope
        route = found[0].path
        headers = scope["headers"]
        rid = f.requests.request_id(headers)
        t0 = time.perf_counter()
        f.lifecycle.started()
        owner, refused = f._check(headers)
        if refused is not None:
            return write(self, cycle, refused, rid, t0, route)
        try:
            request = decode(bytes(cycle.body), None)
            dp = f.dp
            seq = sequence_id(request.parameters, dp.settings.max_sequence_id_chars)
            name, _ = split_view(found[1]["model"])
            w = dp.worker(name, None)
            check(request, w.card)
            x = request.inputs["x"]
            if seq is None or x.ndim != 3 or x.shape[0] != 1 or len(request.inputs) > 1:
                raise InvalidInput("the lean prototype serves sequence steps of one sequence only")
            sessions = dp.sessions
            deadline = time.monotonic() + sessions.settings.request_timeout_s
            sessions._admit()
            x = x[0]
            inputs.check_steps(w.card, x, "input x", sessions.settings.max_steps_per_request)
            engine = engines.get(w.card.key) or engines.setdefault(w.card.key, Engine(w, inline))
            sid = sessions.sequence_session_id(w, seq, owner)
            params = request.parameters
            s = engine.sequence(sid, owner, bool(params.get("sequence_start")))
            if s is None:
                raise InvalidInput(f"sequence {seq!r} is not active: send its first request with sequence_start=true")
            fut = engine.submit(s, x, params.get("expected_step"), digest(x), deadline)
        except ServiceError as e:
            return write(self, cycle, error_reply(e), rid, t0, route)

        def done(fut: asyncio.Future) -> None:
            try:
                res = fut.result()
                if params.get("sequence_end"):
                    engine.end(sid)
                out = {"step": res.step, "replayed": True} if res.replayed else {"step": res.step}
                body, _ = encode(
                    InferReply(w.card.name, w.card.version, {"y": res.outputs[None]}, request.id, out), request
                )
                reply = HotReply(body)
            except ServiceError as e:
                reply = error_reply(e)
            write(self, cycle, reply, rid, t0, route)

        fut.add_done_callback(done)

    protocol.HotProtocol._start_asgi_task = start  # type: ignore[method-assign]
    protocol.HotProtocol.on_message_complete = message_complete  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in LAYERS:
        print(f"usage: python -m bench.layer_server {{{','.join(LAYERS)}}} [service arguments]", file=sys.stderr)
        return 2
    layer = argv[0]
    if layer != "full":  # the service as it is
        install = {"protocol": install_protocol, "front": install_front, "lean": install_lean}
        install[layer.removesuffix("-inline")](*(True,) if layer.endswith("-inline") else ())
    os.environ.pop("LSTM_WORKERS", None)  # one process: the patches live in this one
    from service.__main__ import main as serve

    return serve(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
