"""Server CPU per request of each hot route, measured in-process (no sockets, no client).

Each request is one ASGI call into the app, middleware included: the ASGI front, which an
in-process caller or another ASGI server gets (``python -m service`` serves the hot routes
below ASGI, ``service/api/http/front.py``: ``make bench-peers`` measures that); what is timed
is this process's CPU time (``time.process_time``), so a busy
machine slows the run but hardly changes the figure. Next to the routes, the same step
through the data plane alone (``dp.step``) and a plain FastAPI route with a pydantic body
(the way the step route was served before the hot-route mechanism) give the baselines.

    python -m bench.route_cost [--n 3000] [--streams 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI

from harness.paths import DEFAULT_MODEL
from service.api.http.hot import HotRequest
from service.api.http.responses import FastJSON
from service.api.http.wire import StepRequest
from service.app import create_app
from service.config import Settings

ROW = [30500.0, 8.0, 2.0]


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def one_message(body: bytes) -> Callable[[], Awaitable[dict]]:
    """An ASGI ``receive`` that gives the whole body, then waits (as for a client that stays)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def discard(msg: dict) -> None:
    pass


async def asgi_post(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """One POST through the ASGI app; its status."""
    status = 0

    async def send(msg: dict) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]

    await app(http_scope(path, headers or []), one_message(body), send)
    return status


async def cpu_us(n: int, streams: int, call: Callable[[int, int], Awaitable[Any]]) -> float:
    """CPU µs per request of ``call(stream, i)``: ``streams`` callers at once, ``n`` requests in all
    (concurrent callers' steps are batched together, as under load)."""
    per = max(1, n // streams)

    async def caller(k: int, count: int) -> None:
        for i in range(count):
            await call(k, i)

    await asyncio.gather(*(caller(k, min(per, 50)) for k in range(streams)))  # warm up
    t0 = time.process_time()
    await asyncio.gather(*(caller(k, per) for k in range(streams)))
    return (time.process_time() - t0) / (per * streams) * 1e6


def pydantic_step_app(dp: Any) -> FastAPI:
    """The step route as FastAPI serves a pydantic body: the baseline the hot routes replace."""
    app = FastAPI()

    @app.post("/v1/sessions/{session_id}/step")
    async def step(session_id: str, body: StepRequest) -> FastJSON:
        res = await dp.sessions.step(session_id, np.asarray(body.inputs, np.float32), body.expected_step)
        return FastJSON({"session_id": res.session_id, "step": res.step, "outputs": res.outputs})

    return app


async def measure(n: int, streams: int) -> dict[str, float]:
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent, gc_gen0_threshold=0)
    app = create_app(settings)
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        dp = app.state.dataplane
        sids = [(await dp.sessions.create("demand")).id for _ in range(streams)]
        x = np.asarray([ROW], np.float32)
        step_body = orjson.dumps({"inputs": [ROW]})

        async def plane(k: int, i: int) -> None:
            await dp.sessions.step(sids[k], x)

        out["dp.sessions.step (data plane alone)"] = await cpu_us(n, streams, plane)

        async def v1_step(k: int, i: int) -> None:
            assert await asgi_post(app, f"/v1/sessions/{sids[k]}/step", step_body) == 200

        out["POST /v1/sessions/{id}/step"] = await cpu_us(n, streams, v1_step)

        # the same step through fewer layers: where a request's CPU goes
        table = app.state.front.table  # the hot routes
        router = app.router.middleware_stack  # HotDispatch in front of the router

        def routed(k: int) -> tuple[dict, Any, Any]:
            route, params = table.match("POST", f"/v1/sessions/{sids[k]}/step")
            scope = http_scope(f"/v1/sessions/{sids[k]}/step", [])
            scope |= {"app": app, "path_params": params, "route": route}
            return scope, one_message(step_body), discard

        async def endpoint_only(k: int, i: int) -> None:
            route, params = table.match("POST", f"/v1/sessions/{sids[k]}/step")
            await route.serve(HotRequest(dp, params, b"", [], step_body, None))

        async def route_app(k: int, i: int) -> None:
            scope, receive, send = routed(k)
            await scope["route"].app(scope, receive, send)

        async def router_stack(k: int, i: int) -> None:
            await router(*routed(k))

        out["  v1 step, the endpoint alone (decode, data plane, encode)"] = await cpu_us(n, streams, endpoint_only)
        out["  v1 step, + the route's ASGI app (reply sent)"] = await cpu_us(n, streams, route_app)
        out["  v1 step, + hot dispatch (the router's stack)"] = await cpu_us(n, streams, router_stack)

        baseline = pydantic_step_app(dp)

        async def v1_step_pydantic(k: int, i: int) -> None:
            assert await asgi_post(baseline, f"/v1/sessions/{sids[k]}/step", step_body) == 200

        out["same step, FastAPI route with a pydantic body (baseline)"] = await cpu_us(n, streams, v1_step_pydantic)

        predict_body = orjson.dumps({"inputs": [[ROW]]})

        async def v1_predict(k: int, i: int) -> None:
            assert await asgi_post(app, "/v1/models/demand/predict", predict_body) == 200

        out["POST /v1/models/{m}/predict (1x1)"] = await cpu_us(n, streams, v1_predict)

        def v2_body(seq: int, start: bool) -> bytes:
            return orjson.dumps(
                {
                    "parameters": {"sequence_id": seq, "sequence_start": start},
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 3], "data": ROW}],
                }
            )

        json_bodies = [v2_body(100 + k, False) for k in range(streams)]
        for k in range(streams):
            assert await asgi_post(app, "/v2/models/demand/infer", v2_body(100 + k, True)) == 200

        async def v2_json(k: int, i: int) -> None:
            assert await asgi_post(app, "/v2/models/demand/infer", json_bodies[k]) == 200

        out["POST /v2/models/{m}/infer (JSON, sequence step)"] = await cpu_us(n, streams, v2_json)

        raw = np.asarray([[ROW]], "<f4").tobytes()

        def binary_head(seq: int, start: bool) -> bytes:
            return orjson.dumps(
                {
                    "parameters": {"sequence_id": seq, "sequence_start": start},
                    "inputs": [
                        {
                            "name": "x",
                            "datatype": "FP32",
                            "shape": [1, 1, 3],
                            "parameters": {"binary_data_size": len(raw)},
                        }
                    ],
                    "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
                }
            )

        def hdr(head: bytes) -> list[tuple[bytes, bytes]]:
            return [(b"inference-header-content-length", str(len(head)).encode())]

        heads = [binary_head(200 + k, False) for k in range(streams)]
        for k in range(streams):
            start = binary_head(200 + k, True)
            assert await asgi_post(app, "/v2/models/demand/infer", start + raw, hdr(start)) == 200

        async def v2_binary(k: int, i: int) -> None:
            assert await asgi_post(app, "/v2/models/demand/infer", heads[k] + raw, hdr(heads[k])) == 200

        out["POST /v2/models/{m}/infer (binary, sequence step)"] = await cpu_us(n, streams, v2_binary)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="requests per route")
    p.add_argument("--streams", type=int, default=1, help="concurrent callers (their steps batch together)")
    args = p.parse_args()
    print(json.dumps({k: round(v, 1) for k, v in asyncio.run(measure(args.n, args.streams)).items()}, indent=1))


if __name__ == "__main__":
    main()
