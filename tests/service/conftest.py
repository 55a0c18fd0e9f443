"""Fixtures: a real server in a subprocess, the offline reference run, small session helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest

from harness.paths import DEFAULT_MODEL
from harness.reference import Offline, model_shape, random_steps
from harness.server import Server, running_server
from service.app import create_app, make_store
from service.config import Settings
from service.core.dataplane import DataPlane
from service.metrics import Metrics
from service.sessions.store import SessionStore

__all__ = [
    "Offline",
    "Server",
    "create",
    "data_plane",
    "hold_next_batch",
    "in_process",
    "model_shape",
    "random_steps",
    "running_server",
    "snapshot_state",
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server() as s:
        yield s


@pytest.fixture(scope="session")
def offline() -> Offline:
    return Offline(DEFAULT_MODEL)


async def create(client: httpx.AsyncClient, **body) -> str:
    """A new session of the default model; its id."""
    r = await client.post("/v1/sessions", json={"model": "demand", **body})
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


async def snapshot_state(client: httpx.AsyncClient, sid: str) -> tuple[int, np.ndarray]:
    """A session's step and state ``[2, L, H]`` from its snapshot."""
    r = await client.get(f"/v1/sessions/{sid}/snapshot")
    assert r.status_code == 200, r.text
    s = r.json()
    return s["step"], np.stack([np.asarray(s["h"], np.float32), np.asarray(s["c"], np.float32)])


@asynccontextmanager
async def data_plane(
    settings: Settings | None = None, metrics: Metrics | None = None, store: SessionStore | None = None
) -> AsyncIterator[DataPlane]:
    """A data plane with its models loaded and started, without an app: to drive it directly."""
    settings = settings or Settings(model_repository=DEFAULT_MODEL.parent.parent)
    metrics = metrics or Metrics()
    dp = DataPlane(settings, store or make_store(settings, metrics), metrics)
    dp.load_models()
    await dp.start()
    try:
        yield dp
    finally:
        await dp.stop()


@asynccontextmanager
async def in_process(
    settings: Settings | None = None, store: SessionStore | None = None, metrics: Metrics | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this process (no socket, no subprocess), models loaded and started, with an
    HTTP client on it: for HTTP tests that need no process boundary."""
    settings = settings or Settings(model_repository=DEFAULT_MODEL.parent.parent)
    metrics = metrics or Metrics()
    dp = DataPlane(settings, store or make_store(settings, metrics), metrics)
    app = create_app(settings, dp)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app", timeout=30) as client:
            yield client


def hold_next_batch(dp: DataPlane) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the next batch of the default model wait, once it has begun (``entered``), until
    ``release`` is set: a step that holds its session past its deadline. Later batches run as usual."""
    entered, release = asyncio.Event(), asyncio.Event()
    batcher = dp.worker("demand").batcher
    handler = batcher._handler

    async def slow(tickets: list) -> list:
        batcher._handler = handler
        entered.set()
        await release.wait()
        return await handler(tickets)

    batcher._handler = slow
    return entered, release
