"""The service's one JSON encoder: orjson, numpy arrays serialised directly (float32
round-trips exactly). Every reply body goes through it, errors included, on every transport."""

from __future__ import annotations

from typing import Any

import orjson


def json_bytes(content: Any) -> bytes:
    """The service's one JSON encoder for replies (numpy arrays included)."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
