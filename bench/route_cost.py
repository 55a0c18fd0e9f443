"""Server CPU per request of each hot route, measured in-process (no sockets, no client).

Each request is one ASGI call into the app, middleware included, exactly as uvicorn would
make it; what is timed is this process's CPU time (``time.process_time``), so a busy
machine slows the run but hardly changes the figure. Next to the routes, the same step
through the data plane alone (``dp.step``) and a plain FastAPI route with a pydantic body
(the way the step route was served before the hot-route mechanism) give the baselines.

    python -m bench.route_cost [--n 3000]
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
from service.api.responses import FastJSON
from service.api.wire import StepRequest
from service.app import create_app
from service.config import Settings

ROW = [30500.0, 8.0, 2.0]


async def asgi_post(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """One POST through the ASGI app; its status."""
    status = 0
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return status


async def cpu_us(n: int, call: Callable[[int], Awaitable[Any]]) -> float:
    for i in range(min(200, n)):  # warm up
        await call(i)
    t0 = time.process_time()
    for i in range(n):
        await call(i)
    return (time.process_time() - t0) / n * 1e6


def pydantic_step_app(dp: Any) -> FastAPI:
    """The step route as FastAPI serves a pydantic body: the baseline the hot routes replace."""
    app = FastAPI()

    @app.post("/v1/sessions/{session_id}/step")
    async def step(session_id: str, body: StepRequest) -> FastJSON:
        res = await dp.sessions.step(session_id, np.asarray(body.inputs, np.float32), body.expected_step)
        return FastJSON({"session_id": res.session_id, "step": res.step, "outputs": res.outputs})

    return app


async def measure(n: int) -> dict[str, float]:
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent, gc_gen0_threshold=0)
    app = create_app(settings)
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        dp = app.state.dataplane
        sid = (await dp.sessions.create("demand")).id
        x = np.asarray([ROW], np.float32)
        step_body = orjson.dumps({"inputs": [ROW]})

        async def plane(i: int) -> None:
            await dp.sessions.step(sid, x)

        out["dp.step (data plane alone)"] = await cpu_us(n, plane)

        async def v1_step(i: int) -> None:
            assert await asgi_post(app, f"/v1/sessions/{sid}/step", step_body) == 200

        out["POST /v1/sessions/{id}/step"] = await cpu_us(n, v1_step)

        baseline = pydantic_step_app(dp)

        async def v1_step_pydantic(i: int) -> None:
            assert await asgi_post(baseline, f"/v1/sessions/{sid}/step", step_body) == 200

        out["same step, FastAPI route with a pydantic body (baseline)"] = await cpu_us(n, v1_step_pydantic)

        predict_body = orjson.dumps({"inputs": [[ROW]]})

        async def v1_predict(i: int) -> None:
            assert await asgi_post(app, "/v1/models/demand/predict", predict_body) == 200

        out["POST /v1/models/{m}/predict (1x1)"] = await cpu_us(n, v1_predict)

        def v2_body(i: int, start: bool) -> bytes:
            return orjson.dumps(
                {
                    "parameters": {"sequence_id": 7, "sequence_start": start},
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 3], "data": ROW}],
                }
            )

        async def v2_json(i: int) -> None:
            assert await asgi_post(app, "/v2/models/demand/infer", v2_body(i, i == 0)) == 200

        out["POST /v2/models/{m}/infer (JSON, sequence step)"] = await cpu_us(n, v2_json)

        raw = np.asarray([[ROW]], "<f4").tobytes()
        head = orjson.dumps(
            {
                "parameters": {"sequence_id": 8},
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [1, 1, 3], "parameters": {"binary_data_size": len(raw)}}
                ],
                "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
            }
        )
        start = orjson.loads(head)
        start["parameters"]["sequence_start"] = True
        start_head = orjson.dumps(start)
        await asgi_post(
            app,
            "/v2/models/demand/infer",
            start_head + raw,
            [(b"inference-header-content-length", str(len(start_head)).encode())],
        )

        async def v2_binary(i: int) -> None:
            hdr = [(b"inference-header-content-length", str(len(head)).encode())]
            assert await asgi_post(app, "/v2/models/demand/infer", head + raw, hdr) == 200

        out["POST /v2/models/{m}/infer (binary, sequence step)"] = await cpu_us(n, v2_binary)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="requests per route")
    args = p.parse_args()
    print(json.dumps({k: round(v, 1) for k, v in asyncio.run(measure(args.n)).items()}, indent=1))


if __name__ == "__main__":
    main()
