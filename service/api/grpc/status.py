"""Domain errors -> gRPC status codes, with the same messages as REST's ``{"error": ...}``.

Errors that may pass when retried (503: queue full, draining, store unreachable; 429:
capacity) carry ``retry-after`` (seconds, as REST's header) and ``grpc-retry-pushback-ms``
(what gRPC's own retry policy reads) in the trailing metadata; a 409 step conflict carries
``current-step``.
"""

from __future__ import annotations

import grpc

from service.errors import ServiceError, StepConflict

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

Metadata = tuple[tuple[str, str], ...]


class Unauthenticated(ServiceError):
    status = 401


def to_status(exc: ServiceError) -> tuple[grpc.StatusCode, str, Metadata]:
    md: list[tuple[str, str]] = []
    retry = (exc.headers or {}).get("Retry-After")
    if retry is not None:
        md += [("retry-after", retry), ("grpc-retry-pushback-ms", str(int(float(retry) * 1000)))]
    if isinstance(exc, StepConflict) and exc.current_step is not None:
        md.append(("current-step", str(exc.current_step)))
    return CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message, tuple(md)
