"""Every hot route answers exactly as recorded in ``golden_replies.json`` (see ``golden.py``):
a change to the code behind the routes must not change a reply unless it is meant to, and
then the record is rewritten (``python -m tests.service.golden --write``) and the diff reviewed."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.service.conftest import running_server
from tests.service.golden import LIMIT, RECORD, record, same


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORD.read_text())


@pytest.fixture(scope="module")
def now() -> dict:
    return asyncio.run(record())


def test_the_record_is_of_the_served_model(recorded, now):
    assert now["sha256"] == recorded["sha256"], (
        "the served model changed since the replies were recorded: run `python -m tests.service.golden --write` "
        "and check that only model outputs changed"
    )


@pytest.fixture(scope="module")
def over_socket() -> dict:
    """The same corpus sent over a socket to ``python -m service``: its hot routes are served by
    the HTTP protocol below ASGI, and must answer byte for byte as the app does."""
    with running_server({"LSTM_MAX_BODY_BYTES": str(LIMIT)}) as server:
        return asyncio.run(record(url=server.url))


def test_every_reply_is_as_recorded(recorded, now):
    assert [r["name"] for r in now["replies"]] == [r["name"] for r in recorded["replies"]]
    assert_same(now, recorded)


def test_the_protocol_answers_as_recorded(recorded, over_socket):
    http = [r for r in recorded["replies"] if "frames" not in r]
    assert [r["name"] for r in over_socket["replies"]] == [r["name"] for r in http]
    assert_same(over_socket, {**recorded, "replies": http})


def assert_same(now: dict, recorded: dict) -> None:
    exact = now["fingerprint"] == recorded["fingerprint"]  # onnxruntime rounds as where the record was made
    differ = []
    for a, b in zip(now["replies"], recorded["replies"], strict=True):
        if "frames" in b:
            ok = len(a["frames"]) == len(b["frames"]) and all(
                same(x, y, exact) for x, y in zip(a["frames"], b["frames"], strict=True)
            )
        else:
            ok = (
                a["status"] == b["status"]
                and same(a["body"], b["body"], exact)
                and [h for h in a["headers"] if h[0] != "content-length"]
                == [h for h in b["headers"] if h[0] != "content-length"]
                and (not exact or a["headers"] == b["headers"])
            )
        if not ok:
            differ.append((b["name"], a, b))
    assert not differ, "\n\n".join(f"{name}:\n now {a}\n was {b}" for name, a, b in differ)


def test_a_changed_reply_is_caught(recorded):
    """The comparison can fail: one digit changed in a recorded body is a difference."""
    body = next(r["body"] for r in recorded["replies"] if r["name"] == "v1 step")
    at = body.index("[[") + 3  # a digit of the first output
    changed = body[:at] + str((int(body[at]) + 1) % 10) + body[at + 1 :]
    assert changed != body
    assert not same(changed, body, exact=True)
    assert not same(body.replace('"step":2', '"step":3'), body, exact=False)
