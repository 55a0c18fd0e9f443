"""The HTTP front below ASGI (``service/api/http/front.py``) over raw sockets, against a real
``python -m service``: the tests write the HTTP/1.1 bytes themselves, so they choose how the
requests are cut into TCP segments, pipelined, or abandoned.

What is checked, each in its own test: many requests on one keep-alive connection; pipelined
requests (hot and not) answered in order; a request cut into many small segments, a large
body, ``Expect: 100-continue``; chunked bodies, and the body limit (declared, or while
reading a chunked body) with the session left unchanged and the connection still in step;
a reader that stalls holds up no other connection; error replies keep the connection;
clients that leave mid-request or before their reply leak nothing (the server still drains
and exits at once) and a step is applied at most once; API keys; SIGTERM with requests in
flight (every request gets a whole reply: its result, or 503 with ``Retry-After`` and
``Connection: close``); request ids and the request metric; and exactness of v1 sessions and
v2 sequences streamed concurrently in random chunks, on the memory and the Redis store,
against the offline one-pass run.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from harness.redis import redis_server
from tests.service.conftest import Offline, Server, create, random_steps, running_server, snapshot_state

pytestmark = pytest.mark.integration

LIMIT = 4096  # LSTM_MAX_BODY_BYTES of the `limited` server
KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-fedcba9876543210"
STEP_ROUTE = "/v1/sessions/{session_id}/step"


def _stall_replies() -> int:
    """How many ~1 MB replies a reader must leave unread before the server's writes to it wait:
    the server's socket takes up to ``tcp_wmem``'s maximum (4 MB by default), the reader's 8 kB."""
    try:
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        wmem_max = 4 << 20
    return wmem_max // 1_000_000 + 6


# a reader that stalls: pipelined predicts of this many one-step sequences (a 7 kB request, a
# ~1 MB reply of hn and cn), more replies than the kernel's buffers hold
STALL_ROWS, STALL_REPLIES = 256, _stall_replies()
SEQUENCE_IDS = count(int(time.time() * 1000) % 10**9 * 1000)  # unique on a shared server


# -- raw HTTP/1.1 ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        """The reply says ``Connection: close``."""
        return self.headers.get("connection", "").lower() == "close"


@dataclass
class Conn:
    """One client connection: the test writes request bytes and reads whole replies in order."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before final replies

    @classmethod
    async def open(cls, url: str, *, rcvbuf: int | None = None, limit: int = 2**16) -> Conn:
        """A connection with TCP_NODELAY (each write its own segment); ``rcvbuf`` (set before
        connecting, so it bounds the window) and ``limit`` (how much the stream reader buffers
        before it stops reading the socket) make a client that reads slowly."""
        host, port = url.removeprefix("http://").rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def send_paced(self, data: bytes, size: int) -> None:
        """``data`` in pieces of ``size`` bytes, each flushed alone with a short pause between
        (network pacing: each piece reaches the server as its own segment)."""
        for i in range(0, len(data), size):
            self.writer.write(data[i : i + size])
            await self.writer.drain()
            await asyncio.sleep(0.001)

    async def reply(self, timeout: float = 30) -> Reply:
        """The next whole final reply (a connection closed before it fails the test)."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    head = await self.reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as e:
                    raise AssertionError(f"the connection closed before a whole reply: {e.partial!r}") from None
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
                if 100 <= status < 200:
                    self.interim.append(status)
                    continue
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                        body += (await self.reader.readexactly(size + 2))[:-2]
                    await self.reader.readuntil(b"\r\n")
                else:
                    body = await self.reader.readexactly(int(headers.get("content-length", "0")))
                return Reply(status, headers, body)

    async def at_eof(self, timeout: float = 10) -> bool:
        """The server closed the connection (and sent nothing more)."""
        return await asyncio.wait_for(self.reader.read(1), timeout) == b""

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Leave with a reset, unread data and all."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.writer.transport.abort()


def http(
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    chunks: list[bytes] | None = None,
) -> bytes:
    """The bytes of one request: ``body`` with a Content-Length, or ``chunks`` chunked."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    lines = [f"{method} {path} HTTP/1.1", "host: test"]
    if method == "POST" and "content-type" not in headers:
        lines.append("content-type: application/json")
    if chunks is not None:
        lines.append("transfer-encoding: chunked")
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    elif method == "POST":
        lines.append(f"content-length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def step_body(x: np.ndarray, expected_step: int | None = None) -> bytes:
    body: dict[str, Any] = {"inputs": x.tolist()}
    if expected_step is not None:
        body["expected_step"] = expected_step
    return json.dumps(body).encode()


def padded(x: np.ndarray, expected_step: int, size: int) -> bytes:
    """A valid step body of exactly ``size`` bytes (JSON padded with spaces)."""
    body = step_body(x, expected_step)
    assert len(body) <= size
    return body + b" " * (size - len(body))


def step(sid: str, x: np.ndarray, expected_step: int | None = None, headers: Mapping[str, str] | None = None) -> bytes:
    return http("POST", f"/v1/sessions/{sid}/step", step_body(x, expected_step), headers)


def predict(x: np.ndarray, headers: Mapping[str, str] | None = None) -> bytes:
    """A stateless predict of sequences ``x [n, T, F]``."""
    return http("POST", "/v1/models/demand/predict", json.dumps({"inputs": x.tolist()}).encode(), headers)


def infer_body(x: np.ndarray, sequence_id: int | None = None, start: bool = False, end: bool = False) -> bytes:
    """A v2 JSON infer of one sequence ``x [T, F]``, asking for ``y`` only."""
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, len(x), x.shape[1]], "datatype": "FP32", "data": x.ravel().tolist()}],
        "outputs": [{"name": "y"}],
    }
    if sequence_id is not None:
        body["parameters"] = {"sequence_id": sequence_id, "sequence_start": start, "sequence_end": end}
    return json.dumps(body).encode()


def pieces(data: bytes, n: int) -> list[bytes]:
    """``data`` cut at ``n - 1`` uneven places."""
    cuts = sorted({len(data) * k * k // (n * n) for k in range(1, n)} - {0})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# -- checks ------------------------------------------------------------------------------


def assert_close(got: Any, want: Any) -> None:
    """Every output within 1e-5 of the reference, relative to its magnitude (at least 1)."""
    got = np.asarray(got, np.float64).ravel()
    want = np.asarray(want, np.float64).ravel()
    assert got.shape == want.shape, (got.shape, want.shape)
    bad = np.abs(got - want) > 1e-5 * np.maximum(1.0, np.abs(want))
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(
            f"{int(bad.sum())} outputs differ from the offline run; first at {i}: {got[i]} != {want[i]}"
        )


LABEL = re.compile(r'(\w+)="([^"]*)"')


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of metric ``name`` over its children that carry ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(LABEL.findall(line[: line.rindex("}")]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.get("/metrics")
        assert r.status_code == 200
        return r.text


async def until_metric(url: str, name: str, at_least: float, timeout: float = 10, **labels: str) -> float:
    """Poll the server's own counter until it reaches ``at_least``; its value."""
    deadline = time.monotonic() + timeout
    while (value := metric(await scrape(url), name, **labels)) < at_least:
        assert time.monotonic() < deadline, f"{name}{labels} stayed at {value} < {at_least}"
        await asyncio.sleep(0.01)
    return value


async def new_session(url: str, key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as c:
        return await create(c)


async def session_at(url: str, sid: str) -> tuple[int, np.ndarray]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        return await snapshot_state(c, sid)


async def carry_on(conn: Conn, r: Reply, url: str) -> Conn:
    """The connection after a refusal: if the reply said ``Connection: close`` the server
    closes it (a new one then), otherwise it must serve the next request as usual."""
    if not r.closes:
        return conn
    assert await conn.at_eof()
    conn.close()
    return await Conn.open(url)


def offline_rows(offline: Offline, xs: np.ndarray) -> np.ndarray:
    """``y`` of each one-step sequence of ``xs [n, F]`` run alone."""
    return np.concatenate([offline.run(row[None])[0] for row in xs])


# -- servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited() -> Iterator[Server]:
    with running_server({"LSTM_MAX_BODY_BYTES": str(LIMIT)}) as s:
        yield s


@pytest.fixture(params=["memory", "redis"])
def any_store(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param == "memory":
        yield request.getfixturevalue("server")
        return
    env = {"LSTM_SESSION_STORE": "redis"}
    with redis_server() as redis, running_server({**env, "LSTM_REDIS_URL": redis.url}) as s:
        yield s


# -- tests -------------------------------------------------------------------------------


async def test_200_steps_on_one_keep_alive_connection(server, offline):
    x = random_steps(np.random.default_rng(1), 200)
    sid = await new_session(server.url)
    conn = await Conn.open(server.url)
    outputs = []
    try:
        for t in range(len(x)):
            conn.send(step(sid, x[t : t + 1], t))
            r = await conn.reply()
            assert r.status == 200, r.body
            assert not r.closes, r.headers
            body = r.json()
            assert body["step"] == t + 1 and not body["replayed"], body
            outputs += body["outputs"]
        conn.send(http("GET", f"/v1/sessions/{sid}"))  # still open: it answers one more
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == len(x)
        conn.send(step(sid, x[:1], 0, {"connection": "close"}))  # a client that asks to close
        r = await conn.reply()
        assert r.status == 409 and r.closes and await conn.at_eof(), r
    finally:
        conn.close()
    assert_close(outputs, offline.run(x)[0])


async def test_pipelined_requests_are_answered_in_order(server, offline):
    rng = np.random.default_rng(2)
    xa, xb, xp = random_steps(rng, 20), random_steps(rng, 7), random_steps(rng, 5)
    a, b = await new_session(server.url), await new_session(server.url)
    plan: list[tuple[str, int]] = []
    data = b""
    tb = 0
    for t in range(len(xa)):
        plan.append(("a", t))
        data += step(a, xa[t : t + 1], t)
        if t % 3 == 1 and tb < len(xb):
            plan.append(("b", tb))
            data += step(b, xb[tb : tb + 1], tb)
            tb += 1
        if t == 9:
            plan += [("models", 0), ("predict", 0)]
            data += http("GET", "/v1/models") + predict(xp[None]).replace(b"/predict", b"/predict?version=1")
    conn = await Conn.open(server.url)
    conn.send(data)  # every request in one write, before reading anything
    outputs: dict[str, list] = {"a": [], "b": []}
    try:
        for kind, t in plan:
            r = await conn.reply()
            assert r.status == 200, (kind, t, r.body)
            body = r.json()
            if kind == "models":
                assert [m["name"] for m in body["models"]] == ["demand"], body
            elif kind == "predict":
                assert_close(body["outputs"], offline.run(xp)[0])
            else:
                assert body["session_id"] == (a if kind == "a" else b) and body["step"] == t + 1, (kind, t, body)
                outputs[kind] += body["outputs"]
    finally:
        conn.close()
    assert tb == len(xb)
    assert_close(outputs["a"], offline.run(xa)[0])
    assert_close(outputs["b"], offline.run(xb)[0])


async def test_requests_cut_into_many_tcp_segments(server, offline):
    rng = np.random.default_rng(3)
    x, xs = random_steps(rng, 4), random_steps(rng, 3)
    sid = await new_session(server.url)
    conn = await Conn.open(server.url)
    try:
        request = step(sid, x, 0)
        head, body = request.split(b"\r\n\r\n", 1)
        await conn.send_paced(head + b"\r\n\r\n", 7)
        await conn.send_paced(body, 3)
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == len(x), r.body
        assert_close(r.json()["outputs"], offline.run(x)[0])

        # a v2 sequence with binary tensors, its JSON header and its tensor both cut up
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1, len(xs), 3],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": xs.nbytes},
                    }
                ],
                "outputs": [{"name": "y"}],
                "parameters": {"sequence_id": next(SEQUENCE_IDS), "sequence_start": True},
            }
        ).encode()
        request = http(
            "POST",
            "/v2/models/demand/infer",
            header + xs.astype("<f4").tobytes(),
            {"inference-header-content-length": str(len(header))},
        ).replace(b"application/json", b"application/octet-stream")
        await conn.send_paced(request, 5)
        r = await conn.reply()
        assert r.status == 200, r.body
        assert_close(r.json()["outputs"][0]["data"], offline.run(xs)[0])

        # a ~300 kB body (past uvicorn's 64 kB read buffer) in 16 kB segments
        xb = random_steps(rng, 64 * 160).reshape(64, 160, 3)
        request = predict(xb)
        assert len(request) > 250_000
        await conn.send_paced(request, 16_384)
        r = await conn.reply()
        assert r.status == 200, r.body
        for k in range(0, len(xb), 7):
            assert_close(r.json()["outputs"][k], offline.run(xb[k])[0])

        # Expect: 100-continue: the server asks for the body, then answers it
        request = step(sid, x[:1], len(x), {"expect": "100-continue"})
        head, body = request.split(b"\r\n\r\n", 1)
        conn.send(head + b"\r\n\r\n")
        assert (await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 30)).startswith(b"HTTP/1.1 100 ")
        conn.send(body)
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == len(x) + 1, r.body
        assert_close(r.json()["outputs"], offline.run(np.concatenate([x, x[:1]]))[0][-1:])
    finally:
        conn.close()


async def test_chunked_bodies_and_the_body_limit(limited, offline):
    url = limited.url
    x = random_steps(np.random.default_rng(4), 8)
    sid = await new_session(url)
    conn = await Conn.open(url)
    try:
        conn.send(http("POST", f"/v1/sessions/{sid}/step", chunks=pieces(step_body(x[:3], 0), 5)))
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == 3, r.body
        assert_close(r.json()["outputs"], offline.run(x[:3])[0])
        step0, state0 = await session_at(url, sid)

        # a valid step, over the limit only by its whitespace: chunked, then declared
        big = padded(x[3:4], 3, 2 * LIMIT)
        declared_over = {"error": f"request body of {len(big)} bytes is over the limit of {LIMIT}"}
        conn.send(http("POST", f"/v1/sessions/{sid}/step", chunks=pieces(big, 6)))
        r = await conn.reply()
        assert r.status == 413 and r.json() == {"error": f"request body is over the limit of {LIMIT} bytes"}, r
        conn = await carry_on(conn, r, url)
        conn.send(http("POST", f"/v1/sessions/{sid}/step", big))
        r = await conn.reply()
        assert r.status == 413 and r.json() == declared_over, r
        conn = await carry_on(conn, r, url)
        # refused on its headers: the body it then sends is read and dropped, not taken for a request
        request = http("POST", f"/v1/sessions/{sid}/step", big)
        head = request[: -len(big)]
        conn.send(head)
        r = await conn.reply()
        assert r.status == 413 and r.json() == declared_over, r
        if not r.closes:
            conn.send(big)
        conn = await carry_on(conn, r, url)

        # refused by its declared length before the client sends the body it offers to send
        waiting = await Conn.open(url)
        waiting.send(http("POST", f"/v1/sessions/{sid}/step", big, {"expect": "100-continue"})[: -len(big)])
        r = await waiting.reply()
        assert r.status == 413 and waiting.interim == [], (r, waiting.interim)
        waiting.close()

        step1, state1 = await session_at(url, sid)
        assert step1 == step0 == 3 and np.array_equal(state1, state0), "a refused body changed the session"
        conn.send(step(sid, x[3:], 3))  # the connection and the stream carry on
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == len(x), r.body
        assert_close(r.json()["outputs"], offline.run(x)[0][3:])

        # exactly at the limit is within it, declared or chunked
        conn.send(http("POST", f"/v1/sessions/{sid}/step", padded(x[:1], len(x), LIMIT)))
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == len(x) + 1, r.body
        conn.send(http("POST", f"/v1/sessions/{sid}/step", chunks=pieces(padded(x[:1], len(x) + 1, LIMIT), 4)))
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == len(x) + 2, r.body
    finally:
        conn.close()


async def test_a_stalled_reader_holds_up_no_other_connection(server, offline):
    rng = np.random.default_rng(5)
    xs = random_steps(rng, STALL_ROWS)
    x = random_steps(rng, 30)
    sid = await new_session(server.url)
    done = metric(await scrape(server.url), "lstm_requests_total", route="/v1/models/{model}/predict")
    n = STALL_REPLIES
    slow = await Conn.open(server.url, rcvbuf=4096, limit=4096)
    fast = await Conn.open(server.url)
    try:
        slow.send(predict(xs[:, None]) * n)  # pipelined, and nothing read for now
        # the first reply is written (into the buffers); the next waits for the reader
        await until_metric(server.url, "lstm_requests_total", done + 1, route="/v1/models/{model}/predict")
        outputs = []
        for t in range(len(x)):
            fast.send(step(sid, x[t : t + 1], t))
            r = await fast.reply(timeout=10)
            assert r.status == 200 and r.json()["step"] == t + 1, r.body
            outputs += r.json()["outputs"]
        assert_close(outputs, offline.run(x)[0])
        written = metric(await scrape(server.url), "lstm_requests_total", route="/v1/models/{model}/predict")
        assert written - done < n, "the stalled reader was never stalled: the test proves nothing"
        want = offline_rows(offline, xs)
        for _ in range(n):  # the stalled reader gets every reply, whole and in order
            r = await slow.reply()
            assert r.status == 200
            assert_close(r.json()["outputs"], want)
    finally:
        slow.close()
        fast.close()


async def test_clients_that_leave_early_leak_nothing(offline):
    env = {"LSTM_DRAIN_TIMEOUT_S": "20", "LSTM_DRAIN_QUIET_S": "0.2"}
    rng = np.random.default_rng(6)
    x, xs = random_steps(rng, 12), random_steps(rng, STALL_ROWS)
    with running_server(env) as server:
        url = server.url
        sid = await new_session(url)
        outputs: list = []
        conn = await Conn.open(url)
        conn.send(step(sid, x[:3], 0))
        r = await conn.reply()
        assert r.status == 200
        outputs += r.json()["outputs"]
        conn.close()
        text = await scrape(url)
        gone = metric(text, "lstm_requests_total", route=STEP_ROUTE, status="499")
        steps = metric(text, "lstm_requests_total", route=STEP_ROUTE)

        # headers and half the body, then away: counted as the client's leaving, session unchanged
        half = await Conn.open(url)
        request = step(sid, x[3:5], 3)
        half.send(request[: len(request) - len(step_body(x[3:5], 3)) // 2])
        await half.writer.drain()
        half.close()
        await until_metric(url, "lstm_requests_total", gone + 1, route=STEP_ROUTE, status="499")
        assert (await session_at(url, sid))[0] == 3

        # half the headers, then away: never a request
        partial = await Conn.open(url)
        partial.send(request[:40])
        await partial.writer.drain()
        partial.close()

        # a whole step, then away before the reply: applied once or not at all
        gone_early = await Conn.open(url)
        gone_early.send(step(sid, x[3:5], 3))
        await gone_early.writer.drain()
        gone_early.close()
        await until_metric(url, "lstm_requests_total", steps + 2, route=STEP_ROUTE)
        at, _ = await session_at(url, sid)
        assert at in (3, 5), at

        # a reader that stalls (its replies backed up in the server), then resets the connection
        stalled = await Conn.open(url, rcvbuf=4096, limit=4096)
        predicted = metric(await scrape(url), "lstm_requests_total", route="/v1/models/{model}/predict")
        stalled.send(predict(xs[:, None]) * STALL_REPLIES)
        await until_metric(url, "lstm_requests_total", predicted + 1, route="/v1/models/{model}/predict")
        stalled.abort()

        # the stream resumes with expected_step: the lost reply is replayed, or the step applied now
        conn = await Conn.open(url)
        conn.send(step(sid, x[3:5], 3))
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == 5 and r.json()["replayed"] == (at == 5), r.body
        outputs += r.json()["outputs"]
        conn.send(step(sid, x[5:], 5))
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == len(x), r.body
        outputs += r.json()["outputs"]
        conn.close()
        want_y, want_state = offline.run(x)
        assert_close(outputs, want_y)
        at, state = await session_at(url, sid)
        assert at == len(x)
        assert_close(state, want_state)

        # nothing is left in flight: the drain finds the server quiet and it exits at once
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(server.proc.wait, 30)
        elapsed = time.monotonic() - t0
        log = server.log()
    assert rc == 0, log
    assert "still in flight" not in log, log
    assert elapsed < 10, f"the server took {elapsed:.1f} s to drain: something stayed in flight"


async def test_api_keys_on_the_hot_routes(offline):
    x = random_steps(np.random.default_rng(7), 3)
    no_key = {"error": "a valid API key is required: Authorization: Bearer <key>"}
    a, b = {"authorization": f"Bearer {KEY_A}"}, {"authorization": f"Bearer {KEY_B}"}
    with running_server({"LSTM_API_KEYS": f"{KEY_A},{KEY_B}"}) as server:
        sid = await new_session(server.url, KEY_A)
        requests = {
            "step": lambda h: step(sid, x[:1], 0, h),
            "predict": lambda h: predict(x[None], h),
            "predict version": lambda h: http(
                "POST", "/v1/models/demand/versions/1/predict", json.dumps({"inputs": [x.tolist()]}).encode(), h
            ),
            "infer": lambda h: http("POST", "/v2/models/demand/infer", infer_body(x), h),
            "infer version": lambda h: http("POST", "/v2/models/demand/versions/1/infer", infer_body(x), h),
        }
        conn = await Conn.open(server.url)
        try:
            for name, request in requests.items():
                for headers in ({}, {"authorization": "Bearer wrong-key"}, {"authorization": KEY_A}):
                    conn.send(request(headers))
                    r = await conn.reply()
                    assert r.status == 401 and r.json() == no_key, (name, headers, r)
                    assert r.headers["www-authenticate"] == "Bearer", r.headers
                    conn = await carry_on(conn, r, server.url)
            # refused on its headers alone: the body that follows is dropped, not taken for a request
            request = step(sid, x[:1], 0)
            body = step_body(x[:1], 0)
            conn.send(request[: -len(body)])
            r = await conn.reply()
            assert r.status == 401 and r.json() == no_key, r
            if not r.closes:
                conn.send(body)
            conn = await carry_on(conn, r, server.url)
            conn.send(step(sid, x[:1], 0, b))  # another key's session is unknown to this one
            r = await conn.reply()
            assert r.status == 404 and sid in r.json()["error"], r
            for name, request in requests.items():
                conn.send(request(a))
                r = await conn.reply()
                assert r.status == 200, (name, r)
                if name == "step":
                    assert r.json()["step"] == 1, "the refused requests changed the session"
                    assert_close(r.json()["outputs"], offline.run(x[:1])[0])
        finally:
            conn.close()


async def test_without_keys_the_hot_routes_need_no_header(server):
    x = random_steps(np.random.default_rng(8), 2)
    sid = await new_session(server.url)
    conn = await Conn.open(server.url)
    try:
        conn.send(step(sid, x, 0) + http("POST", "/v2/models/demand/infer", infer_body(x)))
        assert (await conn.reply()).status == 200
        assert (await conn.reply()).status == 200
    finally:
        conn.close()


async def test_error_replies_keep_the_connection_and_the_order(server, offline):
    x = random_steps(np.random.default_rng(12), 2)
    sid = await new_session(server.url)
    path = f"/v1/sessions/{sid}/step"
    bad_v2 = json.loads(infer_body(x))
    bad_v2["inputs"][0]["datatype"] = "INT32"
    cases = [
        (step("demand.1.nosuchsession", x, 0), 404, "nosuchsession"),
        (http("POST", path, b"{not json"), 400, "not valid JSON"),
        (http("POST", path, step_body(x, 0), {"content-type": "text/plain"}), 415, "must be JSON"),
        (http("POST", path, b'{"inputs": [[1, 2]]}'), 400, "inputs"),
        (step(sid, x, 7), 409, "expected_step"),
        (http("GET", "/v1/nowhere"), 404, ""),
        (http("GET", path), 405, ""),  # a hot path with another method goes to the app
        (predict(x[None]).replace(b"/predict", b"/predict?version=9"), 404, "version"),
        (predict(x[None]).replace(b"/demand/", b"/nosuchmodel/"), 404, "nosuchmodel"),
        (http("POST", "/v2/models/demand/infer", json.dumps(bad_v2).encode()), 400, "integers"),
        (http("POST", "/v2/models/demand/infer", b"{"), 400, "JSON"),
    ]
    conn = await Conn.open(server.url)
    try:
        conn.send(b"".join(request for request, _, _ in cases) + step(sid, x, 0))  # pipelined
        for request, status, words in cases:
            r = await conn.reply()
            assert r.status == status and words in r.json()["error"] and not r.closes, (request, r)
        r = await conn.reply()
        assert r.status == 200 and r.json()["step"] == len(x), "an error changed the session"
        assert_close(r.json()["outputs"], offline.run(x)[0])
    finally:
        conn.close()


@dataclass
class Drained:
    """One stream's run across SIGTERM: what was acknowledged, and every reply's (status, close)."""

    sid: str
    x: np.ndarray
    acked: int = 0
    outputs: list = field(default_factory=list)
    replies: list[tuple[int, bool]] = field(default_factory=list)


async def test_sigterm_with_requests_in_flight(offline, tmp_path):
    # the sessions are saved at exit (LSTM_STATE_DIR) and read back from a second server
    env = {"LSTM_DRAIN_TIMEOUT_S": "30", "LSTM_DRAIN_QUIET_S": "0.5", "LSTM_STATE_DIR": str(tmp_path)}
    rng = np.random.default_rng(9)
    with running_server(env) as server:
        url = server.url
        streams = [Drained(await new_session(url), random_steps(rng, 3000)) for _ in range(6)]
        warm = asyncio.Event()
        observed_draining = asyncio.Event()  # the server said not-ready: it drains from now on

        async def run(s: Drained, seed: int) -> None:
            """Step until a reply says Connection: close; every request gets a whole reply."""
            chunk = np.random.default_rng(seed)
            conn = await Conn.open(url)
            try:
                while True:
                    n = int(chunk.integers(1, 4))
                    assert s.acked + n <= len(s.x), "never told to go away"
                    sent_while_draining = observed_draining.is_set()
                    conn.send(step(s.sid, s.x[s.acked : s.acked + n], s.acked))
                    r = await conn.reply()
                    s.replies.append((r.status, r.closes))
                    if r.status == 200:
                        assert r.json()["step"] == s.acked + n, r.body
                        s.outputs += r.json()["outputs"]
                        s.acked += n
                    else:
                        assert r.status == 503 and r.headers.get("retry-after") and r.closes, r
                        assert "shutting down" in r.json()["error"], r.body
                    assert r.closes or not sent_while_draining, "a reply while draining kept the connection"
                    if min(t.acked for t in streams) >= 10:
                        warm.set()
                    if r.closes:
                        assert await conn.at_eof(), "the server kept the connection open after close"
                        return
            finally:
                conn.close()

        tasks = [asyncio.ensure_future(run(s, k)) for k, s in enumerate(streams)]
        await asyncio.wait_for(warm.wait(), 30)
        # a request in flight across the signal whatever the timing: headers and part of its body
        held_sid = await new_session(url)
        xh = random_steps(rng, 2)
        held = await Conn.open(url)
        request = step(held_sid, xh, 0)
        held.send(request[:-10])
        await held.writer.drain()

        server.proc.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 10
            while (await client.get("/v2/health/ready")).status_code != 503:
                assert time.monotonic() < deadline, "the server never turned not-ready"
                await asyncio.sleep(0.01)
        observed_draining.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        held.send(request[-10:])
        r = await held.reply()
        assert r.status in (200, 503) and r.closes, r
        assert await held.at_eof()
        held.close()
        held_step = len(xh) if r.status == 200 else 0
        rc = await asyncio.to_thread(server.proc.wait, 30)
        log = server.log()
    assert rc == 0, log
    for s in streams:
        assert {status for status, _ in s.replies} <= {200, 503}, s.replies
        assert s.replies[-1][1] and not any(closes for _, closes in s.replies[:-1]), s.replies
    with running_server(env) as again:
        async with httpx.AsyncClient(base_url=again.url, timeout=30) as client:
            assert (await snapshot_state(client, held_sid))[0] == held_step
            for s in streams:
                at, state = await snapshot_state(client, s.sid)
                assert at == s.acked, "the session is not where its client was told it is"
                want_y, want_state = offline.run(s.x[: s.acked])
                assert_close(s.outputs, want_y)
                assert_close(state, want_state)


async def test_request_ids_and_the_request_metric(server):
    x = random_steps(np.random.default_rng(10), 6)
    sid = await new_session(server.url)
    before = await scrape(server.url)
    conn = await Conn.open(server.url)
    try:
        conn.send(step(sid, x[:1], 0, {"x-request-id": "abc"}))
        r = await conn.reply()
        assert r.status == 200 and r.headers["x-request-id"] == "abc", r.headers
        ids = set()
        for t in range(1, 5):
            conn.send(step(sid, x[t : t + 1], t))
            r = await conn.reply()
            assert r.status == 200 and r.headers["x-request-id"] not in ("", "abc"), r.headers
            ids.add(r.headers["x-request-id"])
        assert len(ids) == 4, "each request gets an id of its own"
        conn.send(step(sid, x[5:], 5, {"x-request-id": "r" * 100}))  # kept to its first 64 characters
        r = await conn.reply()
        assert r.status == 200 and r.headers["x-request-id"] == "r" * 64, r.headers
        conn.send(step(sid, x[5:], 0))  # a stale expected_step: 409, counted as such
        r = await conn.reply()
        assert r.status == 409 and r.headers["x-request-id"], r
        conn.send(http("POST", "/v2/models/demand/infer", infer_body(x), {"x-request-id": "v2-id"}))
        r = await conn.reply()
        assert r.status == 200 and r.headers["x-request-id"] == "v2-id", r.headers
    finally:
        conn.close()
    after = await scrape(server.url)

    def added(**labels: str) -> float:
        return metric(after, "lstm_requests_total", **labels) - metric(before, "lstm_requests_total", **labels)

    assert added(route=STEP_ROUTE, method="POST", status="200") == 6
    assert added(route=STEP_ROUTE, method="POST", status="409") == 1
    assert added(route="/v2/models/{model}/infer", method="POST", status="200") == 1
    durations = "lstm_request_duration_seconds_count"
    assert metric(after, durations, route=STEP_ROUTE) - metric(before, durations, route=STEP_ROUTE) == 7


async def test_concurrent_v1_sessions_and_v2_sequences_equal_offline_runs(any_store, offline):
    url = any_store.url
    rng = np.random.default_rng(11)
    n = 6
    xs = [random_steps(rng, int(rng.integers(20, 50))) for _ in range(2 * n)]

    async def session(k: int) -> np.ndarray:
        x, chunk = xs[k], np.random.default_rng(100 + k)
        sid = await new_session(url)
        conn = await Conn.open(url)
        outputs, t = [], 0
        try:
            while t < len(x):
                m = int(chunk.integers(1, 6))
                conn.send(step(sid, x[t : t + m], t))
                r = await conn.reply()
                assert r.status == 200, r.body
                body = r.json()
                assert body["step"] == min(t + m, len(x)), body
                outputs += body["outputs"]
                t = body["step"]
        finally:
            conn.close()
        at, state = await session_at(url, sid)
        assert at == len(x)
        assert_close(state, offline.run(x)[1])
        return np.asarray(outputs)

    async def sequence(k: int) -> np.ndarray:
        x, chunk = xs[k], np.random.default_rng(100 + k)
        seq = next(SEQUENCE_IDS)
        conn = await Conn.open(url)
        outputs, t = [], 0
        try:
            while t < len(x):
                m = int(chunk.integers(1, 6))
                body = infer_body(x[t : t + m], seq, start=t == 0, end=t + m >= len(x))
                conn.send(http("POST", "/v2/models/demand/infer", body))
                r = await conn.reply()
                assert r.status == 200, r.body
                outputs += r.json()["outputs"][0]["data"]
                t += m
        finally:
            conn.close()
        return np.asarray(outputs)

    results = await asyncio.gather(*(session(k) for k in range(n)), *(sequence(k) for k in range(n, 2 * n)))
    for got, x in zip(results, xs, strict=True):
        assert_close(got, offline.run(x)[0])
