"""A fast lane for the hottest route, ``POST /v1/sessions/{id}/step``, around FastAPI.

A plain ASGI middleware: it reads the body, and when it is a well-formed step (a JSON
object with ``inputs``, a rectangular list of numbers, and optionally an integer
``expected_step``) it calls the data plane and writes the reply itself, skipping
FastAPI's routing, dependency solving and pydantic validation. Anything else -- bad JSON,
a wrong type, an unknown field -- is handed to the FastAPI route with the body replayed,
so every error message comes from one place and the OpenAPI document is unchanged. The
replies are byte-for-byte those of the route (tested).
"""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

from service.core.dataplane import DataPlane
from service.core.errors import ServiceError, error_body

log = logging.getLogger("service.api")
STEP = re.compile(r"^/v1/sessions/([^/]+)/step$")
FIELDS = frozenset({"inputs", "expected_step"})


class StepFastLane:
    def __init__(self, app: Any, dataplane: DataPlane) -> None:
        self.app = app
        self.dp = dataplane
        self.route = SimpleNamespace(path="/v1/sessions/{session_id}/step")  # logs and metrics name it so

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        m = STEP.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if m is None:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return await self.app(scope, receive, send)  # disconnected: let the app see it
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        parsed = _parse(body)
        if parsed is None:
            return await self.app(scope, _replay(body, receive), send)
        x, expected = parsed
        scope["route"] = self.route
        owner = scope.get("state", {}).get("owner")
        try:
            res = await self.dp.step(m.group(1), x, expected, owner)
            status, out, headers = (
                200,
                {"session_id": res.session_id, "step": res.step, "outputs": res.outputs, "replayed": res.replayed},
                None,
            )
        except ServiceError as e:
            status, out, headers = e.status, error_body(e), e.headers
        payload = orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


def _parse(body: bytes) -> tuple[np.ndarray, int | None] | None:
    """``(inputs, expected_step)`` for a well-formed step body, else None (FastAPI decides)."""
    # booleans and strings are refused by the API, but numpy would convert them: leave any
    # body that holds one to FastAPI (a byte search is far cheaper than walking the lists)
    if b"true" in body or b"false" in body:
        return None
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(req, dict) or not req.keys() <= FIELDS or not isinstance(req.get("inputs"), list):
        return None
    if body.count(b'"') != 2 * len(req):  # quotes around the keys only: no string values
        return None
    expected = req.get("expected_step")
    if expected is not None and (type(expected) is not int or expected < 0):
        return None
    try:
        x = np.array(req["inputs"], dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if x.ndim != 2 or x.size == 0:
        return None
    return x.astype(np.float32), expected


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def again() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
