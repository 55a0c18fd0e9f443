"""One log line per request, with its request id; JSON when asked."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.service.conftest import running_server

pytestmark = pytest.mark.integration


def test_json_access_log_has_request_id():
    with running_server({"LSTM_LOG_FORMAT": "json"}) as server:
        r = httpx.post(server.url + "/v1/sessions", json={"model": "demand"}, headers={"x-request-id": "abc123"})
        assert r.status_code == 201 and r.headers["x-request-id"] == "abc123"
        httpx.get(server.url + "/v2/health/live")
        # an access line is written just after its reply is sent: wait for the event, not a time
        deadline = time.monotonic() + 10
        while '"service.access"' not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.01)
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [x for x in lines if x["logger"] == "service.access"]
    assert len(access) == 1, access  # health checks are not logged as traffic
    assert access[0]["request_id"] == "abc123" and access[0]["status"] == 201
    assert access[0]["route"] == "/v1/sessions" and access[0]["level"] == "info"
