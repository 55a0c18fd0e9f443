"""A model version's card may override the batching settings; the global ones are the defaults."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.paths import DEFAULT_MODEL
from service.config import Settings
from service.errors import ModelLoadError
from tests.service.conftest import data_plane, in_process


def repo_with(tmp_path: Path, batching: object) -> Path:
    version = tmp_path / "demand" / "1"
    shutil.copytree(DEFAULT_MODEL, version)
    card = json.loads((version / "model.json").read_text())
    card["batching"] = batching
    (version / "model.json").write_text(json.dumps(card))
    return tmp_path


async def test_card_overrides_reach_the_batcher_and_the_config(tmp_path):
    settings = Settings(model_repository=repo_with(tmp_path, {"max_batch_size": 8, "max_queue_delay_ms": 5}))
    async with in_process(settings) as client:
        cfg = (await client.get("/v2/models/demand/config")).json()
        assert cfg["max_batch_size"] == 8
        assert cfg["sequence_batching"]["oldest"]["max_queue_delay_microseconds"] == 5000
        # the rest stays global; the idle time is the card's (14 days)
        assert settings.max_batch_size == 64
        assert cfg["sequence_batching"]["max_sequence_idle_microseconds"] == 14 * 86400 * 10**6
        r = await client.post("/v1/models/demand/predict", json={"inputs": [[[30500.0, 8.0, 2.0]]] * 20})
        assert r.status_code == 200


@pytest.mark.parametrize("batching", [{"max_batch_size": 0}, {"queue_delay": 1}, [1]])
async def test_a_bad_override_refuses_to_load_with_a_message(tmp_path, batching):
    settings = Settings(model_repository=repo_with(tmp_path, batching))
    with pytest.raises(ModelLoadError, match="invalid 'batching'"):
        async with in_process(settings):
            pass


async def test_card_placement_overrides_reach_the_worker(tmp_path):
    """Where the card's batches run is the card's own: here loaded batches stay off the event
    loop (``http_inline_compute_us`` 0) and a quiet loop runs calls up to 5 ms."""
    repo = repo_with(tmp_path, {"http_inline_compute_us": 0, "inline_compute_us": 5000})
    async with data_plane(Settings(model_repository=repo)) as dp:
        w = dp.worker("demand")
        assert w.http_inline_s == 0.0
        assert w.inline_s == pytest.approx(0.005)
    async with data_plane(Settings(model_repository=repo_with(tmp_path / "b", {"http_inline_compute_us": 3000}))) as dp:
        assert dp.worker("demand").http_inline_s == pytest.approx(0.003)
