"""A model version's card may override the batching settings; the global ones are the defaults."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.paths import DEFAULT_MODEL
from service.config import Settings
from service.errors import ModelLoadError
from tests.service.conftest import in_process


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
