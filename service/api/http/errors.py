"""The one place where errors become HTTP replies: ``{"error": "..."}`` with the right status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.api.http.hot import ERROR_TEXT, HotReply, as_response
from service.api.http.responses import FastJSON
from service.api.protocol.json import json_bytes
from service.errors import ServiceError, error_body

log = logging.getLogger("service.api")


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


INTERNAL = "internal error; see the server log"


def error_reply(exc: ServiceError) -> HotReply:
    """A domain error as its reply, the same on every HTTP front."""
    headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"application/json"),)
    if exc.headers:
        headers += tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
    return HotReply(json_bytes(error_body(exc)), exc.status, headers)


def message_reply(status: int, message: str, *extra: tuple[bytes, bytes]) -> HotReply:
    """``{"error": message}`` with ``status``: refusals that are not domain errors (401, 413, 500)."""
    return HotReply(json_bytes({"error": message}), status, ((b"content-type", b"application/json"), *extra))


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods of every route whose path matches ``path`` (a path may have one route per method)."""
    methods: set[str] = set()
    for route in app.router.routes:
        regex, own = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and own and regex.match(path):
            methods |= own
    return sorted(methods)


def one_status_for_bad_input(app: FastAPI) -> None:
    """The OpenAPI document as the server answers: FastAPI documents a 422 (its own validation
    error) on every operation with parameters, where this service answers every bad request
    with 400 and the ``{"error": ...}`` body; its validation schemas go too."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            for ops in spec.get("paths", {}).values():
                for op in ops.values():
                    responses = op.get("responses", {})
                    if responses.pop("422", None) is not None and "requestBody" in op and "400" not in responses:
                        responses["400"] = {
                            "description": ERROR_TEXT[400],
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                        }
            schemas = spec.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        return as_response(error_reply(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> FastJSON:
        errs = exc.errors()
        parts = [f"{_where(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errs[:5]]
        more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
        # 400, as every decoder's refusal: one status for a bad request on every route
        return FastJSON({"error": "invalid request: " + "; ".join(parts) + more}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> FastJSON:
        headers = exc.headers
        if exc.status_code == 405:  # every method the path takes, not only the first route's
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request.app, request.url.path))}
        return FastJSON({"error": str(exc.detail)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> FastJSON:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return FastJSON({"error": INTERNAL}, status_code=500)
