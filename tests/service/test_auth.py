"""API keys: 401 without one; a session belongs to its key; other keys see a plain 404."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.service.conftest import running_server

pytestmark = pytest.mark.integration

K1, K2 = "k1-secret-0123456789", "k2-secret-9876543210"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# operators\n{K2}\n")
    env = {"LSTM_API_KEYS": K1, "LSTM_API_KEY_FILE": str(key_file), "LSTM_MAX_SESSIONS_PER_KEY": "3"}
    with running_server(env) as s:
        yield s


def test_requests_without_a_valid_key_are_401(secured):
    with httpx.Client(base_url=secured.url) as c:
        for headers in ({}, auth("wrong"), {"Authorization": K1}, {"Authorization": "Basic " + K1}):
            r = c.post("/v1/sessions", json={"model": "demand"}, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert "API key" in r.json()["error"]
        assert c.get("/v2/models/demand").status_code == 401
        # health and metrics stay open by default
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/metrics").status_code == 200
    assert K1 not in secured.log() and K2 not in secured.log(), "keys are never logged"


def test_sessions_belong_to_their_key(secured):
    with httpx.Client(base_url=secured.url) as c:
        sid = c.post("/v1/sessions", json={"model": "demand"}, headers=auth(K1)).json()["session_id"]
        step = {"inputs": [[30000.0, 1.0, 1.0]]}
        assert c.post(f"/v1/sessions/{sid}/step", json=step, headers=auth(K1)).status_code == 200
        unknown = c.post("/v1/sessions/demand.1.doesnotexist/step", json=step, headers=auth(K2))
        for method, path, body in (
            ("POST", f"/v1/sessions/{sid}/step", step),
            ("GET", f"/v1/sessions/{sid}", None),
            ("GET", f"/v1/sessions/{sid}/snapshot", None),
            ("DELETE", f"/v1/sessions/{sid}", None),
        ):
            r = c.request(method, path, json=body, headers=auth(K2))
            assert r.status_code == 404, (method, path)
            assert r.json()["error"] == unknown.json()["error"].replace("demand.1.doesnotexist", sid)
        info = c.get(f"/v1/sessions/{sid}", headers=auth(K1)).json()
        assert info["step"] == 1, "the other key changed nothing"


def test_sessions_per_key_are_capped(secured):
    with httpx.Client(base_url=secured.url) as c:
        codes = [c.post("/v1/sessions", json={"model": "demand"}, headers=auth(K2)).status_code for _ in range(4)]
        assert codes == [201, 201, 201, 429]
        r = c.post("/v1/sessions", json={"model": "demand"}, headers=auth(K2))
        assert "this API key holds its maximum of 3" in r.json()["error"]


def test_sequences_are_per_key(secured):
    x = {"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": [30000.0, 1.0, 1.0]}
    with httpx.Client(base_url=secured.url) as c:
        start = {"inputs": [x], "parameters": {"sequence_id": 7, "sequence_start": True}}
        assert c.post("/v2/models/demand/infer", json=start, headers=auth(K1)).status_code == 200
        cont = {"inputs": [x], "parameters": {"sequence_id": 7}}
        r = c.post("/v2/models/demand/infer", json=cont, headers=auth(K2))
        assert r.status_code == 400 and "sequence_start" in r.json()["error"]
        assert c.post("/v2/models/demand/infer", json=cont, headers=auth(K1)).status_code == 200


async def test_websocket_needs_a_key(secured):
    with httpx.Client(base_url=secured.url) as c:
        sid = c.post("/v1/sessions", json={"model": "demand"}, headers=auth(K1)).json()["session_id"]
    url = secured.url.replace("http", "ws") + f"/v1/sessions/{sid}/stream"
    for bad in ({}, auth("not-a-key")):  # closed with 1008 and its reason, as docs/websocket.md says
        async with connect(url, additional_headers=bad) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, closed.value
        assert closed.value.rcvd.reason == "a valid API key is required"
    async with connect(url, additional_headers=auth(K1)) as ws:
        await ws.send('{"inputs": [[30000.0, 1.0, 1.0]]}')
        assert '"step":1' in await ws.recv()


@pytest.mark.parametrize("protect", [False, True])
async def test_health_and_metrics_protection_follows_the_setting(protect):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from service.api.auth import ApiKeyAuth, KeyRing

    async def ok(request):
        return PlainTextResponse(request.scope.get("state", {}).get("owner") or "anonymous")

    inner = Starlette(routes=[Route(p, ok) for p in ("/metrics", "/v2/health/ready", "/v1/models")])
    app = ApiKeyAuth(inner, KeyRing([K1.encode()]), protect_health=protect)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for path in ("/metrics", "/v2/health/ready"):
            assert (await c.get(path)).status_code == (401 if protect else 200)
        assert (await c.get("/v1/models")).status_code == 401
        r = await c.get("/v1/models", headers=auth(K1))
        assert r.status_code == 200 and r.text != K1 and len(r.text) == 16  # the owner is a hash, not the key
