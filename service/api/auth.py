"""Optional API keys (bearer tokens), checked before anything else sees a request.

With keys configured (``LSTM_API_KEYS`` and/or ``LSTM_API_KEY_FILE``), every request but
the open ones must carry ``Authorization: Bearer <key>``; a missing or unknown key is 401.
The caller's identity -- a short hash of its key, never the key itself -- goes to
``scope["state"]["owner"]``: sessions belong to the key that created them, and any other
key gets the same 404 as for an unknown session. Keys are compared in constant time
(every configured key is compared, whichever matches). Health and metrics routes are open
unless ``LSTM_AUTH_HEALTH`` is set. Keys are never logged. The gRPC server checks the
``authorization`` metadata with the same :class:`KeyRing`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from service.api.protocol.json import json_bytes

OPEN_PATHS = ("/v2/health/", "/metrics")
DOC_PATHS = ("/docs", "/openapi.json", "/redoc", "/console")  # pages that hold no data (not /v1/console)


def load_keys(keys: tuple[str, ...], key_file: Path | None) -> list[bytes]:
    """Keys from the setting and from a file (one per line, ``#`` comments)."""
    out = [k for k in keys if k]
    if key_file is not None:
        for line in key_file.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return [k.encode() for k in out]


NO_KEY = "a valid API key is required: Authorization: Bearer <key>"


def bearer(headers: Any) -> bytes | None:
    """The request's ``Authorization: Bearer ...`` value (the last one), or None."""
    found = None
    for k, v in headers:
        if k == b"authorization" and v[:7].lower() == b"bearer ":
            found = v
    return found


def caller(scope: MutableMapping[str, Any]) -> str | None:
    """The owner the middleware put in a request's scope (None when auth is off)."""
    state = scope.get("state")
    return state.get("owner") if state else None


def owner_of(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


SUBPROTOCOL = "lstm-serving"  # what a browser offers beside its key (bearer.<key>), and is answered with


class KeyRing:
    """The configured keys and their owners; shared by the HTTP middleware and the gRPC server."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys
        self.owners = [owner_of(k) for k in keys]

    def match(self, presented: bytes) -> str | None:
        """The owner of ``presented``, or None. Every key is compared, whichever matches."""
        found = None
        for key, owner in zip(self.keys, self.owners, strict=True):
            if hmac.compare_digest(key, presented):  # no early exit: time does not tell which key
                found = owner
        return found

    def owner(self, authorization: bytes | None) -> str | None:
        """The owner named by an ``Authorization: Bearer <key>`` value, or None."""
        if not authorization or authorization[:7].lower() != b"bearer ":
            return None
        token = authorization[7:].strip()
        return self.match(token) if token else None


def key_ring(keys: tuple[str, ...], key_file: Path | None) -> KeyRing | None:
    """The ring of the configured keys (the setting's and the file's), read once at start-up;
    None when there are none (auth off)."""
    loaded = load_keys(keys, key_file)
    return KeyRing(loaded) if loaded else None


class ApiKeyAuth:
    def __init__(self, app: Any, ring: KeyRing, protect_health: bool) -> None:
        self.app = app
        self.ring = ring
        self.protect_health = protect_health

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith(DOC_PATHS) or (not self.protect_health and path.startswith(OPEN_PATHS)):
            return await self.app(scope, receive, send)
        owner = self.ring.owner(bearer(scope.get("headers", ())))
        if owner is None:
            if scope["type"] == "websocket":
                # accepted, then closed with 1008 (policy violation), as docs/websocket.md says: a
                # close before the accept would reach the client as an HTTP 403 with no reason
                if (await receive())["type"] != "websocket.connect":
                    return
                offered = scope.get("subprotocols") or ()
                accept = {"type": "websocket.accept", "subprotocol": SUBPROTOCOL if SUBPROTOCOL in offered else None}
                await send(accept)
                await send({"type": "websocket.close", "code": 1008, "reason": "a valid API key is required"})
                return
            body = json_bytes({"error": NO_KEY})
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b"Bearer"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)
