"""The step fast lane answers exactly as the FastAPI route does, byte for byte."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.service.conftest import random_steps, running_server

pytestmark = pytest.mark.integration


def bodies(x: np.ndarray) -> list:
    return [
        {"inputs": x[:2].tolist()},
        {"inputs": x[2:3].tolist(), "expected_step": 2},
        {"inputs": x[2:3].tolist(), "expected_step": 2},  # a retry: replayed
        {"inputs": x[3:4].tolist(), "expected_step": 0},  # 409
        {"inputs": [[1, 2]]},  # 400 from the data plane
        {"inputs": [[1, 2, 3, 4]], "expected_step": 3},
        {"inputs": [["1", 2, 3]]},  # 422 from FastAPI (fallback)
        {"inputs": [[True, 2, 3]]},
        {"inputs": [[1, 2, 3]], "expected_step": True},
        {"inputs": [[1, 2, 3]], "other": 1},
        {"inputs": []},
        {"inputs": x[3:6].astype(int).tolist()},  # integers are numbers
        b'{"inputs": [[NaN, 1, 2]]}',
        b"[1, 2",
    ]


def replay(url: str, sid: str, x: np.ndarray) -> list[tuple[int, bytes]]:
    out = []
    with httpx.Client(base_url=url) as c:
        for b in bodies(x):
            kw = (
                {"content": b, "headers": {"content-type": "application/json"}} if isinstance(b, bytes) else {"json": b}
            )
            r = c.post(f"/v1/sessions/{sid}/step", **kw)
            out.append((r.status_code, r.content))
        r = c.post("/v1/sessions/demand.1.nope/step", json={"inputs": [[1, 2, 3]]})
        out.append((r.status_code, r.content))
    return out


def test_fast_lane_and_route_reply_identically(server):
    x = random_steps(np.random.default_rng(0), 6)
    with running_server({"LSTM_FAST_LANE": "false"}) as slow:
        results = []
        for s in (server, slow):
            # fresh sessions start from zeros on both servers
            sid = httpx.post(s.url + "/v1/sessions", json={"model": "demand"}).json()["session_id"]
            results.append([(st, body.replace(sid.encode(), b"SID")) for st, body in replay(s.url, sid, x)])
    fast, route = results
    assert [st for st, _ in fast] == [200, 200, 200, 409, 400, 400, 422, 422, 422, 422, 400, 200, 422, 422, 404]
    assert fast == route
