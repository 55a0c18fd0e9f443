"""Domain errors. Each carries the HTTP status a transport should answer with.

A leaf module: every layer (transports, data plane, batcher, runtime, stores) may import it,
and it imports nothing of the service."""

from __future__ import annotations

from typing import ClassVar

RETRY_SOON: dict[str, str] = {"Retry-After": "1"}


def duration(seconds: float) -> str:
    """A span of time as a message says it: ``14 days``, ``1 hour``, ``90 s``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


MAX_MESSAGE = 1024  # characters: a message that quotes what a client sent stays this short


class ServiceError(Exception):
    status: int = 500
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE:  # a 100k-character model name is not echoed back whole
            message = message[: MAX_MESSAGE - 20] + " ... (message cut)"
        super().__init__(message)
        self.message = message


class InvalidInput(ServiceError):
    status = 400


class BodyTooLarge(ServiceError):
    status = 413


class UnsupportedMediaType(ServiceError):
    status = 415


class ModelNotFound(ServiceError):
    status = 404


class SessionNotFound(ServiceError):
    status = 404


class ModelControlError(ServiceError):
    """A load or unload request that cannot be carried out (a broken version); nothing was changed."""

    status = 400


class ModelControlOff(ModelControlError):
    """A load or unload request while the server's model control mode allows none: a conflict
    with the server's configuration, not a fault of the request; nothing was changed."""

    status = 409


class ModelInUse(ServiceError):
    """An unload refused because sessions still live on the version."""

    status = 409


class StepConflict(ServiceError):
    """The client's expected step does not match the session (and it is not a retry)."""

    status = 409

    def __init__(self, message: str, current_step: int | None = None) -> None:
        super().__init__(message)
        self.current_step = current_step


class SnapshotMismatch(ServiceError):
    status = 409


class CapacityExceeded(ServiceError):
    status = 429
    headers = RETRY_SOON


class Overloaded(ServiceError):
    status = 503
    headers = RETRY_SOON


class NotReady(ServiceError):
    status = 503
    headers = RETRY_SOON


class StoreUnavailable(ServiceError):
    status = 503
    headers = RETRY_SOON


STORE_ERRORS = (ConnectionError, OSError, EOFError)  # asyncio.IncompleteReadError is an EOFError


def store_unreachable(e: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"the session store is unreachable ({e}); nothing was changed, retry shortly")


class DeadlineExceeded(ServiceError):
    status = 504


class ModelLoadError(Exception):
    """A model in the repository cannot be served; raised at start-up."""


def error_body(exc: ServiceError) -> dict[str, object]:
    """The ``{"error": ...}`` body every transport sends for a domain error."""
    body: dict[str, object] = {"error": exc.message}
    if isinstance(exc, StepConflict) and exc.current_step is not None:
        body["current_step"] = exc.current_step
    return body
