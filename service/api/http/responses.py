"""JSON replies for the FastAPI routes, rendered by the one encoder (:mod:`service.api.protocol.json`)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from service.api.protocol.json import json_bytes


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)
