"""The client under faults injected between requests: every stream still ends equal to the
offline run, with its step count equal to its number of readings.

* a proxy that resets sockets at random, both ways (a request lost, or a reply lost after the step ran)
* the WebSocket cut mid-stream
* a replica draining (503 + Retry-After, WebSocket close 1012) behind two urls and a shared Redis
* a replica SIGKILLed behind two urls and a shared Redis
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np
import pytest

from harness.redis import redis_server
from lstm_serving_client import AsyncClient, AsyncSession, Client, RetryPolicy, Session
from tests.client.conftest import N_STREAMS, assert_exact, chunks, make_streams
from tests.client.faults import ResetProxy
from tests.service.conftest import running_server

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(attempts=12, backoff_s=0.01, max_backoff_s=0.2, deadline_s=30)


def server_step(s: Session) -> int:
    """The session's step as the server has it (equal to the client's count, or the test fails)."""
    step = int(s.info()["step"])
    assert step == s.step_count
    return step


async def async_server_step(s: AsyncSession) -> int:
    step = int((await s.info())["step"])
    assert step == s.step_count
    return step


class Progress:
    """Readings acknowledged across all streams; fires an event (thread-safe) at a threshold."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.count = 0
        self.reached = threading.Event()
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.count += n
            if self.count >= self.threshold:
                self.reached.set()


async def test_random_resets_with_the_async_client_and_stream(server, offline):
    streams = make_streams(10)
    replays = 0
    with ResetProxy(int(server.url.rsplit(":", 1)[1]), p_request=0.04, p_reply=0.08, seed=1) as proxy:
        async with AsyncClient(proxy.url, retry=FAST_RETRY) as client:

            async def rest(k: int) -> tuple[list[list[float]], int]:
                nonlocal replays
                async with client.session("demand") as s:
                    outs = []
                    for part in chunks(streams[k], k):
                        outs += await s.step(part)
                        replays += s.replayed
                    return outs, await async_server_step(s)

            async def ws(k: int) -> tuple[list[list[float]], int]:
                async with client.session("demand") as s:
                    outs = [y async for y in s.stream(streams[k], max_chunk=5)]
                    return outs, await async_server_step(s)

            results = await asyncio.gather(*(rest(k) if k % 2 else ws(k) for k in range(N_STREAMS)))
        assert proxy.resets["request"] > 0 and proxy.resets["reply"] > 0, proxy.resets
    assert replays > 0, "some replies were lost after the step ran, and the retry got the stored reply"
    for x, (outs, steps) in zip(streams, results, strict=True):
        assert_exact(offline, x, outs, steps)


def test_random_resets_with_the_sync_client(server, offline):
    streams = make_streams(11)
    with (
        ResetProxy(int(server.url.rsplit(":", 1)[1]), p_request=0.04, p_reply=0.08, seed=2) as proxy,
        Client(proxy.url, retry=FAST_RETRY) as client,
    ):

        def run(k: int) -> tuple[list[list[float]], int, int]:
            with client.session("demand") as s:
                outs, replays = [], 0
                for part in chunks(streams[k], k):
                    outs += s.step(part)
                    replays += s.replayed
                return outs, server_step(s), replays

        with ThreadPoolExecutor(N_STREAMS) as pool:
            results = list(pool.map(run, range(N_STREAMS)))
        assert proxy.resets["reply"] > 0, proxy.resets
    assert sum(r for *_, r in results) > 0
    for x, (outs, steps, _) in zip(streams, results, strict=True):
        assert_exact(offline, x, outs, steps)


async def test_websocket_cut_mid_stream(server, offline):
    """Every open connection is cut three times while 16 streams run; each resumes exactly."""
    streams = make_streams(12, length=(120, 160))
    progress = Progress(0)

    async def readings(x: np.ndarray) -> AsyncIterator[np.ndarray]:
        for row in x:
            yield row
            progress.add()
            await asyncio.sleep(0)  # let other streams interleave

    with ResetProxy(int(server.url.rsplit(":", 1)[1])) as proxy:
        async with AsyncClient(proxy.url, retry=FAST_RETRY) as client:

            async def run(k: int) -> tuple[list[list[float]], int]:
                async with client.session("demand") as s:
                    outs = [y async for y in s.stream(readings(streams[k]), max_chunk=4)]
                    return outs, await async_server_step(s)

            tasks = [asyncio.ensure_future(run(k)) for k in range(N_STREAMS)]
            total = sum(len(x) for x in streams)
            cuts = 0
            for fraction in (0.25, 0.5, 0.75):
                progress.threshold = int(total * fraction)
                progress.reached.clear()
                await asyncio.to_thread(progress.reached.wait, 60)
                cuts += proxy.cut_all()
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert cuts >= N_STREAMS, f"only {cuts} connections were cut"
    for x, (outs, steps) in zip(streams, results, strict=True):
        assert_exact(offline, x, outs, steps)


def test_sync_websocket_cut_mid_stream(server, offline):
    streams = make_streams(13, n=4, length=(100, 120))
    progress = Progress(sum(len(x) for x in streams) // 2)

    def readings(x: np.ndarray) -> Iterator[np.ndarray]:
        for row in x:
            yield row
            progress.add()

    with ResetProxy(int(server.url.rsplit(":", 1)[1])) as proxy, Client(proxy.url, retry=FAST_RETRY) as client:

        def run(k: int) -> tuple[list[list[float]], int]:
            with client.session("demand") as s:
                return list(s.stream(readings(streams[k]), max_chunk=3)), server_step(s)

        with ThreadPoolExecutor(len(streams)) as pool:
            futures = [pool.submit(run, k) for k in range(len(streams))]
            assert progress.reached.wait(60)
            cut = proxy.cut_all()
            results = [f.result(60) for f in futures]
    assert cut >= 1
    for x, (outs, steps) in zip(streams, results, strict=True):
        assert_exact(offline, x, outs, steps)


@pytest.fixture(scope="module")
def replicas():
    """Three replicas sharing one Redis, started together: one stays, two are there to go away."""
    with redis_server() as redis, ExitStack() as stack:
        env = {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis.url}
        with ThreadPoolExecutor(3) as pool:
            servers = list(pool.map(lambda _: stack.enter_context(running_server(env)), range(3)))
        yield {"staying": servers[0], signal.SIGTERM: servers[1], signal.SIGKILL: servers[2]}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["drain", "sigkill"])
async def test_a_replica_going_away_behind_two_urls(replicas, offline, sig):
    """16 streams on the first url -- four each through the async client's step() and stream(),
    the sync client's step() and stream() (in threads) -- while it drains (503s, then close 1012)
    or is killed; both clients move to the second url."""
    streams = make_streams(14 + sig, length=(40, 60))
    progress = Progress(sum(len(x) for x in streams) // 3)
    leaving, staying = replicas[sig], replicas["staying"]
    urls = [leaving.url, staying.url]

    def paced(x: np.ndarray) -> Iterator[np.ndarray]:
        for row in x:
            yield row
            progress.add()

    def sync_run(client: Client, k: int) -> tuple[list[list[float]], int]:
        with client.session("demand") as s:
            if k % 4 == 3:
                return list(s.stream(paced(streams[k]), max_chunk=3)), server_step(s)
            outs = []
            for part in chunks(streams[k], k, most=3):
                outs += s.step(part)
                progress.add(len(part))
            return outs, server_step(s)

    async with AsyncClient(urls, retry=FAST_RETRY) as client:
        with Client(urls, retry=FAST_RETRY) as sync_client:

            async def readings(x: np.ndarray) -> AsyncIterator[np.ndarray]:
                for row in paced(x):
                    yield row
                    await asyncio.sleep(0)

            async def run(k: int) -> tuple[list[list[float]], int]:
                if k % 4 >= 2:
                    return await asyncio.to_thread(sync_run, sync_client, k)
                async with client.session("demand") as s:
                    if k % 4 == 1:
                        outs = [y async for y in s.stream(readings(streams[k]), max_chunk=3)]
                        return outs, await async_server_step(s)
                    outs = []
                    for part in chunks(streams[k], k, most=3):
                        outs += await s.step(part)
                        progress.add(len(part))
                    return outs, await async_server_step(s)

            tasks = [asyncio.ensure_future(run(k)) for k in range(N_STREAMS)]
            await asyncio.to_thread(progress.reached.wait, 60)
            leaving.proc.send_signal(sig)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert client.endpoints.current == sync_client.endpoints.current == staying.url
    if sig == signal.SIGTERM:
        assert await asyncio.to_thread(leaving.proc.wait, 30) == 0
    for x, (outs, steps) in zip(streams, results, strict=True):
        assert_exact(offline, x, outs, steps)
