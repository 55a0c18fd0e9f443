"""Recorded replies of every hot route, to keep them the same while the code behind them changes.

The corpus is every hot route (v1 step and predict, v2 infer with JSON and binary tensors,
stateless and sequence, with and without ``/versions/{v}``, WebSocket JSON and binary
frames), each answered well and with every error case of ``test_bad_input``, plus the other
refusals a route can give (unknown session or model, conflict, replay, wrong content type,
over-limit and chunked bodies). Each request runs in-process through the app, middleware
included; a reply is recorded as its status, its headers (less ``x-request-id``) and its
body, with session ids written as ``{sid}`` (they are random).

Replies hold model outputs, which depend on onnxruntime's kernels for this CPU. The record
keeps a fingerprint (the bytes of one fixed onnxruntime run): where it matches, every reply
must be byte-identical; on a CPU whose kernels round differently, numbers are compared to
1e-6 of their magnitude and everything else byte for byte.

    python -m tests.service.golden --write   # after a change that is meant to alter replies
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from harness.paths import DEFAULT_MODEL
from service.app import create_app
from service.config import Settings
from tests.service.test_bad_input import BAD_BODIES, BAD_VALUES, OK
from tests.service.test_websocket import ws_scope

RECORD = Path(__file__).with_name("golden_replies.json")
LIMIT = 50_000
ROWS = [[28500.0 + 250.0 * i, 8.0 + 0.5 * i, 2.0] for i in range(5)]
V2_HEADER = "inference-header-content-length"
SERVER_HEADERS = ("x-request-id", "date", "server")  # per reply, or added by the server to every reply


@dataclass
class Call:
    """One request: a POST (``body`` bytes) or a WebSocket frame list (``frames``)."""

    name: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    frames: list[str | bytes] | None = None
    chunked: bool = False


def _v2(rows: list, shape: list[int] | None = None, **params: Any) -> dict[str, Any]:
    x = {"name": "x", "datatype": "FP32", "shape": shape or [1, len(rows), 3], "data": rows}
    return {"inputs": [x], **({"parameters": params} if params else {})}


def _binary(rows: list, outputs: list[str], **params: Any) -> tuple[bytes, dict[str, str]]:
    raw = np.asarray([rows], "<f4").tobytes()
    head: dict[str, Any] = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, len(rows), 3], "parameters": {"binary_data_size": len(raw)}}
        ],
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs],
    }
    if params:
        head["parameters"] = params
    h = orjson.dumps(head)
    return h + raw, {V2_HEADER: str(len(h))}


def j(obj: Any) -> bytes:
    """JSON as a client sends it (the standard library: orjson refuses integers past 64 bits)."""
    return json.dumps(obj, allow_nan=True).encode()


def corpus(layers: int, hidden: int) -> list[Call]:
    """Every request, in the order it is sent (sessions and sequences carry on between them)."""
    calls: list[Call] = []
    step = "/v1/sessions/{sid}/step"
    # v1 step: good steps, a retry, a conflict, an unknown session, every bad input
    calls += [
        Call("v1 step", step, j({"inputs": ROWS[:2], "expected_step": 0})),
        Call("v1 step, second", step, j({"inputs": ROWS[2:], "expected_step": 2})),
        Call("v1 step, retry of the last", step, j({"inputs": ROWS[2:], "expected_step": 2})),
        Call("v1 step, conflict", step, j({"inputs": ROWS[:1], "expected_step": 1})),
        Call("v1 step, no expected_step", step, j({"inputs": ROWS[:1]})),
        Call("v1 step, negative expected_step", step, j({"inputs": ROWS[:1], "expected_step": -1})),
        Call("v1 step, unknown field", step, j({"inputs": ROWS[:1], "extra": 1})),
        Call("v1 step, unknown session", "/v1/sessions/demand.1.nope/step", j({"inputs": ROWS[:1]})),
        Call("v1 step, text/plain", step, j({"inputs": ROWS[:1]}), {"content-type": "text/plain"}),
        Call("v1 step, over the limit", step, b" " * (LIMIT + 1)),
        Call("v1 step, chunked", step, j({"inputs": ROWS[:1]}), chunked=True),
        Call("v1 step, chunked over the limit", step, b" " * (LIMIT + 1), chunked=True),
    ]
    calls += [Call(f"v1 step, {what}", step, j({"inputs": rows})) for what, rows, *_ in BAD_VALUES]
    calls += [Call(f"v1 step, {what}", step, raw) for what, raw, *_ in BAD_BODIES]
    # v1 predict
    predict = "/v1/models/demand/predict"
    state = {"h0": [[[0.01] * hidden]] * layers, "c0": [[[-0.02] * hidden]] * layers}
    calls += [
        Call("v1 predict", predict, j({"inputs": [ROWS, ROWS]})),
        Call("v1 predict, version 1", "/v1/models/demand/versions/1/predict", j({"inputs": [ROWS[:2]]})),
        Call("v1 predict, from a state", predict, j({"inputs": [ROWS[:2]], **state})),
        Call("v1 predict, h0 alone", predict, j({"inputs": [ROWS[:2]], "h0": state["h0"]})),
        Call("v1 predict, unknown model", "/v1/models/nope/predict", j({"inputs": [ROWS]})),
        Call("v1 predict, unknown version", "/v1/models/demand/versions/9/predict", j({"inputs": [ROWS]})),
        Call("v1 predict, text/plain", predict, j({"inputs": [ROWS]}), {"content-type": "text/plain"}),
        Call("v1 predict, over the limit", predict, b" " * (LIMIT + 1)),
        Call("v1 predict, chunked", predict, j({"inputs": [ROWS]}), chunked=True),
    ]
    calls += [Call(f"v1 predict, {what}", predict, j({"inputs": [rows]})) for what, rows, *_ in BAD_VALUES]
    calls += [Call(f"v1 predict, {what}", predict, raw) for what, raw, *_ in BAD_BODIES]
    # v2 JSON
    infer = "/v2/models/demand/infer"
    flat = [v for row in ROWS for v in row]
    calls += [
        Call("v2 stateless", infer, j({"id": "a", **_v2(flat, [1, 5, 3])})),
        Call("v2 stateless, version 1", "/v2/models/demand/versions/1/infer", j(_v2(flat, [1, 5, 3]))),
        Call("v2 stateless, nested data", infer, j(_v2([ROWS], [1, 5, 3]))),
        Call("v2 sequence start", infer, j(_v2(ROWS[:2], sequence_id=5, sequence_start=True))),
        Call(
            "v2 sequence, named outputs",
            "/v2/models/demand/versions/1/infer",
            j({**_v2(ROWS[2:], sequence_id=5), "outputs": [{"name": n} for n in ("y", "hn", "cn")]}),
        ),
        Call("v2 sequence, string id", infer, j(_v2(ROWS[:1], sequence_id="s-1", sequence_start=True))),
        Call("v2 sequence end", infer, j(_v2(ROWS[:1], sequence_id=5, sequence_end=True))),
        Call("v2 sequence, ended, without start", infer, j(_v2(ROWS[:1], sequence_id=5))),
        Call("v2 sequence, never started", infer, j(_v2(ROWS[:1], sequence_id=77))),
        Call("v2, unknown output", infer, j({**_v2(ROWS[:1]), "outputs": [{"name": "z"}]})),
        Call(
            "v2, wrong input name",
            infer,
            j({"inputs": [{"name": "q", "datatype": "FP32", "shape": [1, 1, 3], "data": OK}]}),
        ),
        Call(
            "v2, wrong datatype",
            infer,
            j({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1, 1, 3], "data": OK}]}),
        ),
        Call("v2, shape disagrees", infer, j(_v2(OK, [1, 2, 3]))),
        Call("v2, unknown model", "/v2/models/nope/infer", j(_v2(ROWS[:1]))),
        Call("v2, over the limit", infer, b" " * (LIMIT + 1)),
        Call("v2, chunked", infer, j(_v2(ROWS[:1])), chunked=True),
        Call("v2, text/plain", infer, j(_v2(ROWS[:1])), {"content-type": "text/plain"}),
    ]
    for what, rows, *_ in BAD_VALUES:
        shape = [1, 2, 3] if what in ("ragged rows", "no steps") else None
        calls.append(Call(f"v2 sequence, {what}", infer, j(_v2(rows, shape, sequence_id="s-1"))))
    calls += [Call(f"v2, {what}", infer, raw) for what, raw, *_ in BAD_BODIES]
    # v2 binary
    for name, (body, headers) in (
        ("v2 binary stateless", _binary(ROWS, ["y"])),
        ("v2 binary stateless, every output", _binary(ROWS, ["y", "hn", "cn"])),
        ("v2 binary sequence start", _binary(ROWS[:2], ["y"], sequence_id=9, sequence_start=True)),
        ("v2 binary sequence", _binary(ROWS[2:], ["y"], sequence_id=9)),
        ("v2 binary, NaN", _binary([[np.nan, 8.0, 2.0]], ["y"])),
        ("v2 binary, hour out of range", _binary([[30500.0, 99.0, 2.0]], ["y"])),
    ):
        calls.append(Call(name, infer, body, headers))
    body, headers = _binary(ROWS, ["y"])
    calls.append(Call("v2 binary, short tensor", infer, body[:-4], headers))
    calls.append(Call("v2 binary, header length past the body", infer, body, {V2_HEADER: str(len(body) + 1)}))
    # WebSocket frames, on a fresh session of their own
    wsp = "/v1/sessions/{sid2}/stream"
    frames: list[str | bytes] = [
        json.dumps({"inputs": ROWS[:2], "expected_step": 0, "id": 1}),
        json.dumps({"inputs": ROWS[:2], "expected_step": 0, "id": "retry"}),
        json.dumps({"inputs": ROWS[:1], "expected_step": 0}),
        np.asarray(ROWS[2:], "<f4").tobytes(),
        np.asarray(ROWS[2:], "<f4").tobytes()[:-4],
        json.dumps({"inputs": ROWS[:1], "session_id": "other"}),
        json.dumps({"inputs": ROWS[:1], "extra": True}),
        "not json",
    ]
    frames += [json.dumps({"inputs": rows, "id": what}) for what, rows, *_ in BAD_VALUES]
    frames += [np.asarray([[np.nan, 8.0, 2.0]], "<f4").tobytes(), np.asarray([[30500.0, 99.0, 2.0]], "<f4").tobytes()]
    calls.append(Call("websocket, one session", wsp, frames=frames))
    multi: list[str | bytes] = [
        json.dumps({"inputs": ROWS[:1], "session_id": "{sid2}", "id": "m"}),
        json.dumps({"inputs": ROWS[:1]}),
        json.dumps({"inputs": ROWS[:1], "session_id": "demand.1.nope"}),
        np.asarray(ROWS[:1], "<f4").tobytes(),
    ]
    calls.append(Call("websocket, many sessions", "/v1/stream", frames=multi))
    return calls


def fingerprint(app: Any) -> str:
    """The bytes of one fixed run of the served model: equal where onnxruntime rounds alike."""
    w = app.state.dataplane.worker("demand")
    c = w.card
    zeros = np.zeros((len(c.states), c.num_layers, 1, c.hidden_size), np.float32)
    y, state = w.model.run(np.asarray([ROWS], np.float32), zeros, None)
    return base64.b64encode(np.concatenate([y.ravel(), state.ravel()]).tobytes()).decode()


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    """The body in pieces, sent without Content-Length (chunked)."""
    for i in range(0, len(body), 1000):
        yield body[i : i + 1000]


async def _websocket(app: Any, path: str, frames: list[str | bytes]) -> list[tuple[str, bytes]]:
    """Send ``frames`` over one WebSocket to the ASGI app, one at a time, each awaiting its
    reply; the replies as ``("text" | "bytes", data)``."""
    inbox: asyncio.Queue[dict] = asyncio.Queue()
    outbox: asyncio.Queue[dict] = asyncio.Queue()
    scope = ws_scope(path)
    await inbox.put({"type": "websocket.connect"})
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    assert (await outbox.get())["type"] == "websocket.accept"
    replies = []
    for f in frames:
        await inbox.put({"type": "websocket.receive", **({"bytes": f} if isinstance(f, bytes) else {"text": f})})
        msg = await outbox.get()
        replies.append(("bytes", msg["bytes"]) if msg.get("bytes") is not None else ("text", msg["text"].encode()))
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await task
    return replies


async def record(model_dir: Path = DEFAULT_MODEL, url: str | None = None) -> dict[str, Any]:
    """Send the corpus to a fresh app; ``{"model", "sha256", "fingerprint", "replies"}``.

    In-process through the ASGI app (middleware included), or, with ``url``, over a socket
    to a real server (its hot routes served by the HTTP protocol): then the WebSocket calls
    are left out and so are the headers every uvicorn reply carries (``date``, ``server``)."""
    settings = Settings(model_repository=model_dir.parent.parent, max_body_bytes=LIMIT)
    app = create_app(settings)
    out: list[dict[str, Any]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app) if url is None else None
        async with httpx.AsyncClient(transport=transport, base_url=url or "http://app", timeout=30) as client:
            card = app.state.dataplane.worker("demand").card
            sids = {}
            for name in ("sid", "sid2"):
                sids[name] = (await client.post("/v1/sessions", json={"model": "demand"})).json()["session_id"]

            def fill(s: str) -> str:
                return s.replace("{sid}", sids["sid"]).replace("{sid2}", sids["sid2"])

            def scrub(b: bytes) -> str:
                text = b.decode("latin-1")
                for k, v in sids.items():
                    text = text.replace(v, "{" + k + "}")
                return text

            for call in corpus(card.num_layers, card.hidden_size):
                if call.frames is not None:
                    if url is None:
                        frames = [f if isinstance(f, bytes) else fill(f) for f in call.frames]
                        replies = await _websocket(app, fill(call.path), frames)
                        out.append({"name": call.name, "frames": [f"{kind} {scrub(data)}" for kind, data in replies]})
                    continue
                headers = {"content-type": "application/json", **call.headers}
                content: Any = _chunks(call.body) if call.chunked else call.body
                r = await client.post(fill(call.path), content=content, headers=headers)
                kept = sorted([k, scrub(v.encode("latin-1"))] for k, v in r.headers.items() if k not in SERVER_HEADERS)
                out.append({"name": call.name, "status": r.status_code, "headers": kept, "body": scrub(r.content)})
        fp = fingerprint(app)
    return {"model": card.key, "sha256": card.sha256, "fingerprint": fp, "replies": out}


def _numbers(text: str) -> tuple[str, list[float]]:
    """A reply with its numbers taken out: (the text with each number as #, the numbers)."""
    nums: list[float] = []

    def take(m: re.Match) -> str:
        nums.append(float(m.group(0)))
        return "#"

    return re.sub(r"-?\d+\.\d+(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+", take, text), nums


def same(a: str, b: str, exact: bool) -> bool:
    """Replies equal: byte for byte, or (not ``exact``) with numbers to 1e-6 of their magnitude."""
    if a == b or exact:
        return a == b
    (ta, na), (tb, nb) = _numbers(a), _numbers(b)
    if ta != tb or len(na) != len(nb):
        return False
    x, y = np.asarray(na), np.asarray(nb)
    scale = max(1.0, float(np.abs(y).max(initial=0.0)))
    return bool(np.all(np.abs(x - y) <= 1e-6 * scale))


def main() -> None:
    p = argparse.ArgumentParser(description="Record the hot routes' replies (tests/service/golden_replies.json).")
    p.add_argument("--write", action="store_true", help="write the record (otherwise print how many replies differ)")
    args = p.parse_args()
    now = asyncio.run(record())
    if args.write:
        RECORD.write_text(json.dumps(now, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {len(now['replies'])} replies to {RECORD}")
        return
    old = json.loads(RECORD.read_text())
    diff = [a["name"] for a, b in zip(now["replies"], old["replies"], strict=False) if a != b]
    print(f"{len(diff)} of {len(now['replies'])} replies differ: {diff}")


if __name__ == "__main__":
    main()
