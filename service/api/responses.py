"""Fast JSON replies: orjson serialises numpy arrays directly (float32 round-trips exactly)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def json_bytes(content: Any) -> bytes:
    """The service's one JSON encoder for replies (numpy arrays included)."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)
