"""One mechanism for every hot route: documented by FastAPI, served without its per-request work.

A hot endpoint is ``async def endpoint(request: Request) -> Response``: it reads the body
itself, decodes it with the wire format's decoder (:mod:`service.api.decode`,
:mod:`service.api.v2_codec`) into typed arrays for the data plane, and renders the reply
with the format's encoder. :class:`HotRoute` serves it directly -- no dependency solving,
no pydantic validation of the body, no response-model serialisation, the measured bulk of
FastAPI's cost per request -- while the route stays a normal ``APIRoute`` for everything
else: the OpenAPI document (its request body comes from ``body=``, its replies from
``response_model`` and ``responses``), the exception handlers and every middleware.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.api.wire import ErrorBody

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]
ERROR_TEXT = {
    400: "Invalid input: the message names the field and what was expected",
    401: "Missing or unknown API key",
    404: "Unknown model, version or session (or the session expired)",
    409: "expected_step does not match the session (the body carries current_step)",
    413: "Request body over the size limit",
    415: "The body is not JSON",
    429: "Session capacity reached",
    503: "Overloaded, draining or the session store unreachable; retry after Retry-After",
    504: "Deadline exceeded; the session is unchanged",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error replies a route can give: ``{"error": ...}``."""
    return {code: {"model": ErrorBody, "description": ERROR_TEXT[code]} for code in codes}


class HotRoute(APIRoute):
    """An ``APIRoute`` whose ASGI app calls the endpoint and sends its reply, nothing more.

    FastAPI's wrapper around an endpoint also opens two exit stacks for dependencies with
    ``yield`` (a hot endpoint has none) and catches exceptions with the app's handlers;
    here an exception goes up to the app's exception middleware, which holds the very same
    handlers, so every error is rendered as before."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        serve: Endpoint = self.endpoint

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await serve(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app


class HotDispatch:
    """Finds a hot route before the framework's router does.

    The router matches a request against every route in turn, with bookkeeping per
    candidate (about a fifth of a hot request's CPU when profiled); hot routes are few and
    known, so their compiled path patterns are tried first and the matching route's own ASGI
    app serves the request -- the same route object the router would have picked, with the
    same exception handling. Everything else goes to the router unchanged."""

    def __init__(self, app: Any, routes: list[HotRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for route in self.routes:
                m = route.path_regex.match(path)
                if m is not None:
                    scope["path_params"] = {**scope.get("path_params", {}), **m.groupdict()}
                    scope["route"] = route
                    scope["endpoint"] = route.endpoint
                    return await route.app(scope, receive, send)
        await self.app(scope, receive, send)


def install(app: Any, *routers: APIRouter) -> None:
    """Serve the hot routes of ``routers`` (already included in ``app``) through HotDispatch."""
    routes = [r for router in routers for r in router.routes if isinstance(r, HotRoute)]
    app.router.middleware_stack = HotDispatch(app.router.middleware_stack, routes)


def hot(
    router: APIRouter,
    path: str,
    *,
    body: type[BaseModel] | dict[str, Any] | None,
    summary: str,
    response_model: type[BaseModel] | None = None,
    responses: dict[int | str, dict[str, Any]] | None = None,
    tags: list[str] | None = None,
    description: str | None = None,
) -> Callable[[Endpoint], Endpoint]:
    """Register ``POST path`` as a hot route; ``body`` documents the request (a model or a schema)."""
    schema = body.model_json_schema() if isinstance(body, type) else body
    extra = {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}} if schema else {}

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            summary=summary,
            description=description or endpoint.__doc__ or "",
            response_model=response_model,
            responses=responses,
            tags=tags,  # type: ignore[arg-type]
            openapi_extra=extra or None,
            route_class_override=HotRoute,
        )
        return endpoint

    return register
