"""Fixtures of the client tests: a live server, the offline reference, 16 test streams."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.service.conftest import Offline, Server, offline, random_steps, running_server

__all__ = ["offline"]

N_STREAMS = 16


@pytest.fixture(scope="package")
def server() -> Iterator[Server]:
    with running_server() as s:
        yield s


def make_streams(seed: int, n: int = N_STREAMS, length: tuple[int, int] = (40, 80)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [random_steps(rng, int(rng.integers(*length))) for _ in range(n)]


def chunks(x: np.ndarray, seed: int, most: int = 7) -> Iterator[np.ndarray]:
    """``x`` in consecutive chunks of 1 to ``most`` readings."""
    rng = np.random.default_rng(seed)
    t = 0
    while t < len(x):
        n = int(rng.integers(1, most + 1))
        yield x[t : t + n]
        t += n


def assert_exact(offline: Offline, x: np.ndarray, outputs: list[list[float]], step_count: int) -> None:
    """The stream's outputs equal one offline pass, and it consumed each reading exactly once."""
    assert step_count == len(x), f"step count {step_count} != {len(x)} readings"
    assert len(outputs) == len(x)
    offline.assert_outputs_close(outputs, offline.run(x)[0])
