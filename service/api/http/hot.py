"""The hot routes: declared and documented by FastAPI, served by one plain function each.

A hot endpoint is ``async def endpoint(req: HotRequest) -> HotReply``: it gets the parsed
request (path parameters, query, headers, the whole body, the caller's key owner), decodes
the body with its wire format's decoder (:mod:`service.api.protocol.decode`,
:mod:`service.api.protocol.v2_codec`) into typed arrays for the data plane, and returns the reply as
bytes. Two fronts call the same endpoint:

- the HTTP protocol (:mod:`service.api.http.front`) calls it straight from the parsed
  request, below ASGI -- this is how ``python -m service`` serves it;
- the route's own ASGI app (:class:`HotRoute`), for an app served by any other ASGI server
  or called in-process (tests), behind the app's middleware and exception handlers.

Either way the route stays a normal ``APIRoute`` for the OpenAPI document: its request body
comes from ``body=``, its replies from ``response_model`` and ``responses``, and its path
(and query) parameters are declared from the path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.api.auth import caller
from service.api.http.wire import ErrorBody

if TYPE_CHECKING:
    from service.core.dataplane import DataPlane

JSON = b"application/json"
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


@dataclass(slots=True)
class HotRequest:
    """One request to a hot route, as both fronts hand it over."""

    dp: DataPlane
    path_params: dict[str, str]
    query: bytes  # the raw query string
    headers: list[tuple[bytes, bytes]]  # lower-case names, as received
    body: bytes
    owner: str | None  # the caller's key owner (None when auth is off)

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None

    def query_param(self, name: str) -> str | None:
        if not self.query:
            return None
        return next((v for k, v in parse_qsl(self.query.decode("latin-1"), keep_blank_values=True) if k == name), None)


class HotReply(NamedTuple):
    """A reply as bytes: status, body, and its headers (content type first; no length)."""

    body: bytes
    status: int = 200
    headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type", JSON),)


Endpoint = Callable[[HotRequest], Coroutine[Any, Any, HotReply]]


def as_response(reply: HotReply) -> Response:
    """A hot reply as a Starlette response (the ASGI front)."""
    return Response(
        reply.body,
        status_code=reply.status,
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in reply.headers},
    )


class HotRoute(APIRoute):
    """An ``APIRoute`` whose ASGI app reads the body, calls the endpoint, sends its reply.

    No dependency solving, no validation by pydantic, no response model: an exception goes
    up to the app's exception middleware, which renders every error the way the protocol
    does (:func:`service.api.http.errors.error_reply`)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        serve: Endpoint = endpoint.__hot__  # type: ignore[attr-defined]
        self.serve = serve

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            request = Request(scope, receive, send)
            hot = HotRequest(
                scope["app"].state.dataplane,
                scope["path_params"],
                scope.get("query_string", b""),
                scope["headers"],
                await request.body(),
                caller(scope),
            )
            await as_response(await serve(hot))(scope, receive, send)

        self.app = app


class HotTable:
    """The hot routes' compiled paths, tried in order: ``match(method, path)`` gives the
    route and its path parameters, or None."""

    def __init__(self, routes: list[HotRoute]) -> None:
        self.routes = routes

    def match(self, method: str, path: str) -> tuple[HotRoute, dict[str, str]] | None:
        if method != "POST":
            return None
        for route in self.routes:
            m = route.path_regex.match(path)
            if m is not None:
                return route, m.groupdict()
        return None


class HotDispatch:
    """The ASGI front's shortcut: finds a hot route before the framework's router does
    (the router's bookkeeping per candidate route costs more than the endpoint's own work)
    and calls that route's ASGI app, with the same exception handling. Everything else goes
    to the router unchanged."""

    def __init__(self, app: Any, table: HotTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            found = self.table.match(scope["method"], scope["path"])
            if found is not None:
                route, params = found
                scope["path_params"] = {**scope.get("path_params", {}), **params}
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                return await route.app(scope, receive, send)
        await self.app(scope, receive, send)


def install(app: Any, *routers: APIRouter) -> HotTable:
    """Serve the hot routes of ``routers`` (already included in ``app``) through HotDispatch;
    the table is the protocol's too."""
    table = HotTable([r for router in routers for r in router.routes if isinstance(r, HotRoute)])
    app.router.middleware_stack = HotDispatch(app.router.middleware_stack, table)
    return table


def _parameters(path: str, query: dict[str, str] | None) -> list[dict[str, Any]]:
    """OpenAPI parameters: each ``{name}`` of the path, and the optional query parameters."""
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "title": name.title()}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    for name, description in (query or {}).items():
        params.append(
            {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": "string"}}
        )
    return params


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
    query: dict[str, str] | None = None,
    status_code: int = 200,
) -> Callable[[Endpoint], Endpoint]:
    """Register ``POST path`` as a hot route; ``body`` documents the request (a model or a
    schema), ``query`` its optional query parameters (name -> description)."""
    schema = body.model_json_schema() if isinstance(body, type) else body
    extra: dict[str, Any] = {"parameters": _parameters(router.prefix + path, query)}
    if schema:
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}

    def register(endpoint: Endpoint) -> Endpoint:
        async def documented() -> None:
            """FastAPI sees this signature (no parameters to solve); HotRoute serves ``endpoint``."""

        documented.__name__ = endpoint.__name__
        documented.__hot__ = endpoint  # type: ignore[attr-defined]
        router.add_api_route(
            path,
            documented,
            methods=["POST"],
            status_code=status_code,
            summary=summary,
            description=description or endpoint.__doc__ or "",
            response_model=response_model,
            responses=responses,
            tags=tags,  # type: ignore[arg-type]
            openapi_extra=extra,
            route_class_override=HotRoute,
        )
        return endpoint

    return register
