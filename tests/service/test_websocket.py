"""WebSocket streaming through a real server: exactness, binary frames, errors, ordering, reconnects."""

from __future__ import annotations

import asyncio
import signal
import struct
from collections.abc import AsyncIterator

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Message
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.app import create_app
from service.core.dataplane import DataPlane
from tests.service.conftest import create, data_plane, random_steps, running_server, snapshot_state

pytestmark = pytest.mark.integration


def ws_url(server, path: str) -> str:
    return server.url.replace("http://", "ws://", 1) + path


async def json_step(ws: ClientConnection, x: np.ndarray, **fields) -> dict:
    await ws.send(orjson.dumps({"inputs": x, **fields}, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    return orjson.loads(await ws.recv())


async def binary_step(ws: ClientConnection, x: np.ndarray) -> tuple[int, np.ndarray]:
    await ws.send(np.ascontiguousarray(x, "<f4").tobytes())
    reply = await ws.recv()
    assert isinstance(reply, bytes), reply
    (step,) = struct.unpack("<Q", reply[:8])
    return step, np.frombuffer(reply[8:], "<f4").reshape(len(x), -1)


async def error(ws: ClientConnection, frame: str | bytes) -> dict:
    await ws.send(frame)
    reply = await ws.recv()
    assert isinstance(reply, str), "errors come back as text frames"
    body = orjson.loads(reply)
    assert "error" in body and "outputs" not in body, body
    return body


def chunks(rng: np.random.Generator, n: int, start: int = 0) -> list[tuple[int, int]]:
    out, t = [], start
    while t < n:
        k = min(n - t, int(rng.integers(1, 18)))
        out.append((t, t + k))
        t += k
    return out


async def assert_final_state(client: httpx.AsyncClient, sid: str, offline, x: np.ndarray) -> None:
    step, state = await snapshot_state(client, sid)
    _, want = offline.run(x)
    assert step == len(x)
    assert np.max(np.abs(state - want)) <= 1e-5


async def test_json_stream_in_random_chunks_equals_offline_run(server, offline):
    rng = np.random.default_rng(10)
    x = random_steps(rng, 150)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        outs = []
        async with connect(ws_url(server, f"/v1/sessions/{sid}/stream")) as ws:
            for i, (a, b) in enumerate(chunks(rng, len(x))):
                expected = {"expected_step": a} if i % 2 else {}
                body = await json_step(ws, x[a:b], id=f"m{i}", **expected)
                assert body["id"] == f"m{i}" and body["session_id"] == sid
                assert body["step"] == b and body["replayed"] is False
                outs.append(np.asarray(body["outputs"], np.float32))
        offline.assert_outputs_close(np.concatenate(outs), offline.run(x)[0])
        await assert_final_state(client, sid, offline, x)


async def test_binary_stream_in_random_chunks_equals_offline_run(server, offline):
    rng = np.random.default_rng(11)
    x = random_steps(rng, 150)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        outs = []
        async with connect(ws_url(server, f"/v1/sessions/{sid}/stream")) as ws:
            for a, b in chunks(rng, len(x)):
                step, y = await binary_step(ws, x[a:b])
                assert step == b
                outs.append(y)
        offline.assert_outputs_close(np.concatenate(outs), offline.run(x)[0])
        await assert_final_state(client, sid, offline, x)


async def test_bad_frames_get_errors_and_the_stream_continues_from_the_right_state(server, offline):
    x = random_steps(np.random.default_rng(12), 12)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        async with connect(ws_url(server, f"/v1/sessions/{sid}/stream")) as ws:
            first = await json_step(ws, x[:5])
            _, before = await snapshot_state(client, sid)
            e = await error(ws, orjson.dumps({"inputs": [[30000.0, 8.0]], "id": 7}).decode())
            assert e["status"] == 400 and "3 features" in e["error"] and e["id"] == 7
            nan = x[5:7].copy()
            nan[1, 0] = np.nan
            e = await error(ws, nan.astype("<f4").tobytes())
            assert e["status"] == 400 and "NaN" in e["error"]
            e = await error(ws, b"\x00" * 13)
            assert e["status"] == 400 and "12 bytes" in e["error"]
            e = await error(ws, '{"inputs": [[1, 2, 3]')
            assert e["status"] == 400 and "not valid JSON" in e["error"]
            e = await error(ws, "[1, 2, 3]")
            assert e["status"] == 400
            e = await error(ws, orjson.dumps({"inputs": x[5:6].tolist(), "expected_step": 2}).decode())
            assert e["status"] == 409 and e["current_step"] == 5
            e = await error(ws, orjson.dumps({"inputs": x[5:6].tolist(), "extra": 1}).decode())
            assert e["status"] == 400 and "extra" in e["error"]
            e = await error(ws, orjson.dumps({"inputs": x[5:6].tolist(), "expected_step": "5"}).decode())
            assert e["status"] == 400 and "expected_step" in e["error"]
            e = await error(ws, orjson.dumps({"inputs": x[5:6].tolist(), "session_id": "demand.1.other"}).decode())
            assert e["status"] == 400 and "/v1/stream" in e["error"]
            step, after = await snapshot_state(client, sid)
            assert step == 5 and np.array_equal(before, after), "a refused frame changes nothing"
            # a retried message (same expected_step, same inputs) is answered from the stored reply
            second = await json_step(ws, x[5:9], expected_step=5)
            again = await json_step(ws, x[5:9], expected_step=5)
            assert again["replayed"] is True and again["outputs"] == second["outputs"] and again["step"] == 9
            step, third = await binary_step(ws, x[9:])
            assert step == 12
        got = np.concatenate([first["outputs"], second["outputs"], third])
        offline.assert_outputs_close(got, offline.run(x)[0])
        await assert_final_state(client, sid, offline, x)


async def test_unknown_session_is_a_404_message_and_the_socket_stays_open(server):
    async with connect(ws_url(server, "/v1/sessions/demand.1.unknownunknown/stream")) as ws:
        for frame in ('{"inputs": [[30000.0, 8.0, 1.0]]}', np.zeros(3, "<f4").tobytes()):
            e = await error(ws, frame)
            assert e["status"] == 404 and "unknown or has expired" in e["error"]
        await ws.ping()


async def test_disconnect_and_reconnect_continue_the_stream(server, offline):
    rng = np.random.default_rng(13)
    x = random_steps(rng, 90)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        outs = []
        for a, b in ((0, 30), (30, 60), (60, 90)):
            async with connect(ws_url(server, f"/v1/sessions/{sid}/stream")) as ws:
                for c, d in chunks(rng, b, start=a):
                    body = await json_step(ws, x[c:d], expected_step=c)
                    assert body["step"] == d
                    outs.append(np.asarray(body["outputs"], np.float32))
        offline.assert_outputs_close(np.concatenate(outs), offline.run(x)[0])
        await assert_final_state(client, sid, offline, x)


async def test_abrupt_disconnect_with_queued_messages_leaves_a_consistent_session(server, offline):
    x = random_steps(np.random.default_rng(14), 200)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        async with connect(ws_url(server, f"/v1/sessions/{sid}/stream")) as ws:
            for t in range(100):
                await ws.send(orjson.dumps({"inputs": x[t : t + 1].tolist(), "expected_step": t}).decode())
        # some of the 100 steps ran, the rest were dropped; none ran twice or out of order. A step
        # still running when the socket closed finishes first: the session's lock orders the
        # continuation after it, and a 409 names the step to continue from
        k = 0
        async with connect(ws_url(server, f"/v1/sessions/{sid}/stream")) as ws:
            for _ in range(10):
                body = await json_step(ws, x[k:], expected_step=k)
                if body.get("status") != 409:
                    break
                k = body["current_step"]
            assert 0 <= k <= 100 and body["step"] == 200, body
        offline.assert_outputs_close(body["outputs"], offline.run(x)[0][k:])
        await assert_final_state(client, sid, offline, x)


async def test_multi_session_stream_interleaves_four_sessions(server, offline):
    rng = np.random.default_rng(15)
    xs = [random_steps(rng, int(rng.integers(40, 120))) for _ in range(4)]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sids = [await create(client) for _ in xs]
        plans = [chunks(rng, len(x)) for x in xs]
        order = rng.permutation(np.repeat(np.arange(4), [len(p) for p in plans]))
        outs: list[list[np.ndarray]] = [[] for _ in xs]
        async with connect(ws_url(server, "/v1/stream")) as ws:
            for n, i in enumerate(order):
                a, b = plans[i].pop(0)
                body = await json_step(ws, xs[i][a:b], session_id=sids[i], id=n, expected_step=a)
                assert (body["id"], body["session_id"], body["step"]) == (n, sids[i], b)
                outs[i].append(np.asarray(body["outputs"], np.float32))
                if n == 5:
                    e = await error(ws, orjson.dumps({"inputs": [[1.0, 2.0, 3.0]]}).decode())
                    assert e["status"] == 400 and "session_id" in e["error"]
                    e = await error(ws, np.zeros(3, "<f4").tobytes())
                    assert e["status"] == 400 and "binary" in e["error"]
        for sid, x, out in zip(sids, xs, outs, strict=True):
            offline.assert_outputs_close(np.concatenate(out), offline.run(x)[0])
            await assert_final_state(client, sid, offline, x)


async def test_pipelined_messages_come_back_in_order(server, offline):
    rng = np.random.default_rng(16)
    x = random_steps(rng, 2000)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await create(client)
        async with connect(ws_url(server, f"/v1/sessions/{sid}/stream")) as ws:
            plan = chunks(rng, 300)
            assert len(plan) >= 20
            plan = plan[:50]
            for n, (a, b) in enumerate(plan):
                await ws.send(orjson.dumps({"inputs": x[a:b].tolist(), "id": n}).decode())
            replies = [orjson.loads(await ws.recv()) for _ in plan]
            assert [r["id"] for r in replies] == list(range(len(plan)))
            assert [r["step"] for r in replies] == [b for _, b in plan]
            got = np.concatenate([np.asarray(r["outputs"], np.float32) for r in replies])
            end = plan[-1][1]
            offline.assert_outputs_close(got, offline.run(x[:end])[0])

            # many more messages than the server's queue holds, sent and read concurrently
            async def send_all() -> None:
                for t in range(end, len(x)):
                    await ws.send(orjson.dumps({"inputs": x[t : t + 1].tolist(), "id": t}).decode())

            sender = asyncio.create_task(send_all())
            replies = [orjson.loads(await ws.recv()) for _ in range(end, len(x))]
            await sender
            assert [r["step"] for r in replies] == list(range(end + 1, len(x) + 1))
            offline.assert_outputs_close([r["outputs"][0] for r in replies], offline.run(x)[0][end:])
        await assert_final_state(client, sid, offline, x)


async def test_shutdown_closes_the_socket_with_service_restart():
    x = random_steps(np.random.default_rng(17), 400)
    with running_server({"LSTM_DRAIN_TIMEOUT_S": "10"}) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            sid = await create(client)
        async with connect(ws_url(server, f"/v1/sessions/{sid}/stream")) as ws:
            await json_step(ws, x[:1])
            server.proc.send_signal(signal.SIGTERM)
            statuses = []
            with pytest.raises(ConnectionClosed) as closed:
                for t in range(1, len(x)):
                    body = orjson.loads(await asyncio.wait_for(json_step_raw(ws, x[t : t + 1]), 10))
                    if "error" in body:
                        statuses.append(body["status"])
                    await asyncio.sleep(0.005)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert set(statuses) <= {503}, statuses
        assert await asyncio.to_thread(server.proc.wait, 30) == 0


async def json_step_raw(ws: ClientConnection, x: np.ndarray) -> str | bytes:
    await ws.send(orjson.dumps({"inputs": x.tolist()}).decode())
    return await ws.recv()


@pytest.fixture
async def inprocess() -> AsyncIterator[tuple[FastAPI, DataPlane]]:
    """The app with a started data plane, without a server: to drive its ASGI interface directly."""
    async with data_plane() as dp:
        yield create_app(dp.settings, dp), dp


def ws_scope(path: str) -> dict:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "subprotocols": [],
        "server": ("testserver", 80),
        "client": ("testclient", 1),
    }


async def test_draining_data_plane_answers_503_then_closes_with_1012(inprocess):
    app, dp = inprocess
    sid = (await dp.sessions.create("demand")).id
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(app(ws_scope(f"/v1/sessions/{sid}/stream"), inbox.get, outbox.put))
    await inbox.put({"type": "websocket.connect"})
    assert (await outbox.get())["type"] == "websocket.accept"
    await inbox.put({"type": "websocket.receive", "text": '{"inputs": [[30000.0, 8.0, 1.0]]}'})
    assert orjson.loads((await outbox.get())["text"])["step"] == 1
    dp.start_drain()
    await inbox.put({"type": "websocket.receive", "text": '{"inputs": [[30000.0, 8.5, 1.0]], "id": "last"}'})
    body = orjson.loads((await asyncio.wait_for(outbox.get(), 10))["text"])
    assert body["status"] == 503 and body["id"] == "last" and "shutting down" in body["error"]
    close = await asyncio.wait_for(outbox.get(), 10)
    assert close["type"] == "websocket.close" and close["code"] == 1012
    await asyncio.wait_for(task, 10)


async def test_a_client_that_does_not_read_stops_the_server_reading(inprocess):
    """Backpressure: with replies stuck, the server takes at most its queue's worth of messages."""
    app, dp = inprocess
    sid = (await dp.sessions.create("demand")).id
    received = 0
    stuck = asyncio.Event()

    async def receive() -> Message:
        nonlocal received
        await asyncio.sleep(0)
        received += 1
        if received == 1:
            return {"type": "websocket.connect"}
        return {"type": "websocket.receive", "text": '{"inputs": [[30000.0, 8.0, 1.0]]}'}  # always one more

    async def send(msg: Message) -> None:
        if msg["type"] == "websocket.send":
            stuck.set()
            await asyncio.Event().wait()  # the client never reads

    task = asyncio.create_task(app(ws_scope(f"/v1/sessions/{sid}/stream"), receive, send))
    await asyncio.wait_for(stuck.wait(), 10)
    for _ in range(500):  # let every runnable task run: the reader stops once the queue is full
        await asyncio.sleep(0)
    assert received <= 1 + 1 + 64 + 1, f"the server read {received} messages with its replies stuck"
    assert (await dp.sessions.get(sid)).step == 1
    task.cancel()  # the connection is torn down: both of its tasks stop
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def test_pipelined_binary_frames_coalesce_and_stay_exact(server, offline):
    """Frames queued behind each other run as one longer step; every frame still gets its own reply."""
    from websockets.asyncio.client import connect

    rng = np.random.default_rng(11)
    sizes = [int(s) for s in rng.integers(1, 4, 200)]
    x = random_steps(rng, sum(sizes))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = (await client.post("/v1/sessions", json={"model": "demand"})).json()["session_id"]
        before = (await client.get("/metrics")).text
        async with connect(server.url.replace("http", "ws") + f"/v1/sessions/{sid}/stream") as ws:
            t = 0
            for n in sizes:
                await ws.send(x[t : t + n].astype("<f4").tobytes())
                t += n
            outs, t = [], 0
            for n in sizes:
                reply = await ws.recv()
                t += n
                assert struct.unpack("<Q", reply[:8])[0] == t
                outs.append(np.frombuffer(reply[8:], "<f4").reshape(n, 1))
        after = (await client.get("/metrics")).text
    want, _ = offline.run(x)
    offline.assert_outputs_close(np.concatenate(outs), want)

    def calls(text: str) -> float:
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("lstm_batch_size_count"))

    assert calls(after) - calls(before) < len(sizes), "queued frames were not run together"
