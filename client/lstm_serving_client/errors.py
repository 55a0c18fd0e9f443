"""Typed errors. Each carries the server's message and the HTTP status it came with.

``ServingError`` is the base of everything this package raises on purpose. A status the
client retried until its bound (503, 504, network errors) surfaces as the last error seen,
so ``Overloaded`` after retries means the service kept answering 503.
"""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """Any error the service answered with, or that kept it from answering."""

    status: int | None = None

    def __init__(self, message: str, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.body: dict[str, Any] = body or {}

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status is not None else self.message


class InvalidInput(ServingError):
    """400/422: the request is malformed (shape, feature count, NaN…); nothing changed on the server."""


class PayloadTooLarge(InvalidInput):
    """413: the request is over the server's body limit; send fewer steps per request."""


class Unauthorized(ServingError):
    """401 (or a WebSocket closed with 1008): a valid API key is required."""


class NotFound(ServingError):
    """404."""


class ModelNotFound(NotFound):
    """404 on a model route: the model (or version) is not served."""


class SessionExpired(NotFound):
    """404 on a session: unknown, deleted, or idle past the server's TTL. Its state is gone;
    create a new session (or restore a snapshot)."""


class StepConflict(ServingError):
    """409 on a step: the session is not where this client left it (another writer, a restored
    snapshot, a step sent elsewhere). The client never skips or resends readings on its own:
    ``current_step`` says where the session is; decide, then ``Session.resync()``."""

    def __init__(
        self,
        message: str,
        current_step: int | None,
        expected_step: int,
        status: int = 409,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status, body)
        self.current_step = current_step
        self.expected_step = expected_step


class SnapshotMismatch(ServingError):
    """409 on restore: the snapshot belongs to a different model file (checksum) than the one served."""


class CapacityExceeded(ServingError):
    """429: the server (or this API key) is at its limit of live sessions."""


class Overloaded(ServingError):
    """503 after the retry bound: the queue stayed full, the store unreachable, or every replica draining."""


class DeadlineExceeded(ServingError):
    """504 after the retry bound: steps kept missing the server's deadline (the session is unchanged)."""


class ConnectionFailed(ServingError):
    """No replica could be reached (or every connection dropped) within the retry bound."""


class ServerError(ServingError):
    """500 or another unexpected status; not retried."""


class ProtocolError(ServingError):
    """The server's reply broke the protocol (e.g. a step count that does not add up)."""


def error_for(status: int, body: dict[str, Any], *, session: bool, expected_step: int | None = None) -> ServingError:
    """The typed error for an error reply ``{"error": ...}`` with ``status``."""
    message = str(body.get("error") or f"HTTP {status}")
    if status in (400, 422):
        return InvalidInput(message, status, body)
    if status == 413:
        return PayloadTooLarge(message, status, body)
    if status == 401:
        return Unauthorized(message, status, body)
    if status == 404:
        return (SessionExpired if session else ModelNotFound)(message, status, body)
    if status == 409:
        if expected_step is not None:
            current = body.get("current_step")
            return StepConflict(message, current if isinstance(current, int) else None, expected_step, status, body)
        return SnapshotMismatch(message, status, body)
    if status == 429:
        return CapacityExceeded(message, status, body)
    if status == 503:
        return Overloaded(message, status, body)
    if status == 504:
        return DeadlineExceeded(message, status, body)
    return ServerError(message, status, body)
