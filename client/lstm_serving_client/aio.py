"""The asyncio client: ``AsyncClient`` and its ``AsyncSession``. Same behaviour as the
blocking ``Client`` (see ``sync.py`` for the contracts), with ``await``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from lstm_serving_client._common import (
    DEFAULT_TIMEOUT_S,
    Call,
    Endpoints,
    Prediction,
    RetryPolicy,
    as_nested,
    as_reading,
    as_rows,
    error_body,
    headers,
    retry_after,
    step_outputs,
    ws_error,
)
from lstm_serving_client.errors import ConnectionFailed, ServingError, Unauthorized, error_for

_END = object()


class AsyncClient:
    """The asyncio twin of ``Client``: one service, or several replicas sharing a session store."""

    def __init__(
        self,
        url: str | Sequence[str],
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.endpoints = Endpoints(url)
        self.api_key = api_key
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(timeout=timeout, headers=headers(api_key))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        session: bool = False,
        expected_step: int | None = None,
        advance: int = 0,
        resendable: bool = True,
    ) -> Any:
        """One call with retries; see ``Client.request``."""
        call = Call(self.retry, self.endpoints, advance)
        while True:
            base = call.begin()
            try:
                r = await self._http.request(method, base + path, json=body)
            except httpx.TransportError as e:
                if not resendable and not isinstance(e, httpx.ConnectError):
                    raise ConnectionFailed(f"{method} {path}: {e!r}; not resent: it may have been applied") from e
                wait = call.unreachable(ConnectionFailed(f"{base}: {type(e).__name__}: {e}"))
            else:
                if r.status_code < 300:
                    return r.json() if r.content else None
                err = error_for(r.status_code, error_body(r.text), session=session, expected_step=expected_step)
                wait = call.refused(err, retry_after(r.headers))
            await asyncio.sleep(wait)

    async def models(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/models"))["models"])

    async def model(self, name: str, version: str | None = None) -> dict[str, Any]:
        path = f"/v1/models/{name}" + (f"?version={version}" if version else "")
        return dict(await self.request("GET", path))

    async def predict(
        self, model: str, inputs: Any, *, h0: Any = None, c0: Any = None, version: str | None = None
    ) -> Prediction:
        body: dict[str, Any] = {"inputs": as_nested(inputs)}
        if h0 is not None:
            body["h0"] = as_nested(h0)
        if c0 is not None:
            body["c0"] = as_nested(c0)
        path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + "/predict"
        r = await self.request("POST", path, body)
        return Prediction(r["model"], r["version"], r["outputs"], r["hn"], r.get("cn"))

    def session(
        self, model: str, version: str | None = None, *, h0: Any = None, c0: Any = None, delete_on_exit: bool = True
    ) -> _Opening:
        """``async with client.session("demand") as s:`` (or ``s = await client.session(...)``)."""
        body: dict[str, Any] = {"model": model}
        if version is not None:
            body["version"] = version
        if h0 is not None:
            body["h0"] = as_nested(h0)
        if c0 is not None:
            body["c0"] = as_nested(c0)
        return _Opening(self, "POST", "/v1/sessions", body, delete_on_exit)

    def resume(self, session_id: str, *, delete_on_exit: bool = False) -> _Opening:
        """Attach to an existing session at the step the server has."""
        return _Opening(self, "GET", f"/v1/sessions/{session_id}", None, delete_on_exit)

    def restore(self, snapshot: dict[str, Any], *, delete_on_exit: bool = True) -> _Opening:
        """A new session from ``AsyncSession.snapshot()``."""
        return _Opening(self, "POST", "/v1/sessions/import", snapshot, delete_on_exit)


class _Opening:
    """A session being opened: awaitable, or an async context manager that closes it on exit."""

    def __init__(self, client: AsyncClient, method: str, path: str, body: Any, delete_on_exit: bool) -> None:
        self._args = (client, method, path, body, delete_on_exit)
        self._session: AsyncSession | None = None

    async def _open(self) -> AsyncSession:
        client, method, path, body, delete_on_exit = self._args
        # retried like any call: a create whose reply was lost leaves an orphan session that expires after the TTL
        info = await client.request(method, path, body, session=method == "GET")
        return AsyncSession(client, info, delete_on_exit)

    def __await__(self) -> Any:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncSession:
        self._session = await self._open()
        return self._session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.aclose()


class AsyncSession:
    """A stream's server-side state; one ordered stream: do not step it from two tasks at once."""

    def __init__(self, client: AsyncClient, info: dict[str, Any], delete_on_exit: bool) -> None:
        self.client = client
        self.id: str = info["session_id"]
        self.model: str = info["model"]
        self.version: str = info["version"]
        self.step_count: int = int(info["step"])
        self.replayed = False
        self.delete_on_exit = delete_on_exit
        self._ws: ClientConnection | None = None

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._close_ws()
        if self.delete_on_exit:
            await self.delete()

    async def step(self, readings: Any) -> list[list[float]]:
        rows = as_rows(readings)
        expected = self.step_count
        r = await self.client.request(
            "POST",
            f"/v1/sessions/{self.id}/step",
            {"inputs": rows, "expected_step": expected},
            session=True,
            expected_step=expected,
            advance=len(rows),
        )
        outputs = step_outputs(r, expected, len(rows))
        self.step_count = expected + len(rows)
        self.replayed = bool(r.get("replayed"))
        return outputs

    async def info(self) -> dict[str, Any]:
        return dict(await self.client.request("GET", f"/v1/sessions/{self.id}", session=True))

    async def resync(self) -> int:
        self.step_count = int((await self.info())["step"])
        return self.step_count

    async def snapshot(self) -> dict[str, Any]:
        return dict(await self.client.request("GET", f"/v1/sessions/{self.id}/snapshot", session=True))

    async def delete(self) -> None:
        try:
            await self.client.request("DELETE", f"/v1/sessions/{self.id}", session=True)
        except ServingError as e:
            if e.status != 404:
                raise

    async def stream(
        self, readings: Iterable[Any] | AsyncIterable[Any], *, max_chunk: int = 64
    ) -> AsyncIterator[list[float]]:
        """``async for y in s.stream(readings)``: one output row per reading, in order, over a
        WebSocket that is reconnected and resumed if it drops; see ``Session.stream``."""
        feed: asyncio.Queue[Any] = asyncio.Queue(max_chunk)

        async def pull() -> None:
            try:
                if isinstance(readings, AsyncIterable):
                    async for item in readings:
                        await feed.put(as_reading(item))
                else:
                    for item in readings:
                        await feed.put(as_reading(item))
            except Exception as e:  # handed to the consumer, raised there
                await feed.put(e)
            await feed.put(_END)

        feeder = asyncio.create_task(pull())
        try:
            done = False
            while not done:
                item = await feed.get()
                batch: list[list[float]] = []
                while True:
                    if item is _END:
                        done = True
                        break
                    if isinstance(item, BaseException):
                        raise item
                    batch.append(item)
                    if len(batch) >= max_chunk or feed.empty():
                        break
                    item = feed.get_nowait()
                if batch:
                    for row in await self._ws_step(batch):
                        yield row
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    async def _connect(self) -> ClientConnection:
        c = self.client
        return await connect(
            c.endpoints.ws(f"/v1/sessions/{self.id}/stream"),
            additional_headers=headers(c.api_key),
            open_timeout=c.timeout,
            max_size=None,
        )

    async def _close_ws(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close()

    async def _ws_step(self, rows: list[list[float]]) -> list[list[float]]:
        expected = self.step_count
        message = json.dumps({"inputs": rows, "expected_step": expected, "id": expected})
        c = self.client
        call = Call(c.retry, c.endpoints, len(rows))
        while True:
            base = call.begin()
            try:
                if self._ws is None:
                    self._ws = await self._connect()
                await self._ws.send(message)
                reply = json.loads(await asyncio.wait_for(self._ws.recv(), c.timeout))
            except InvalidStatus as e:
                self._ws = None
                if e.response.status_code in (401, 403):
                    raise Unauthorized("a valid API key is required", e.response.status_code) from e
                wait = call.unreachable(ConnectionFailed(f"{base}: WebSocket handshake: {e}"))
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as e:
                await self._close_ws()
                if isinstance(e, ConnectionClosed) and e.rcvd is not None and e.rcvd.code == 1008:
                    raise Unauthorized(e.rcvd.reason or "a valid API key is required") from e
                wait = call.unreachable(ConnectionFailed(f"{base}: WebSocket: {type(e).__name__}: {e}"))
            else:
                if "error" not in reply:
                    outputs = step_outputs(reply, expected, len(rows))
                    self.step_count = expected + len(rows)
                    self.replayed = bool(reply.get("replayed"))
                    return outputs
                wait = call.refused(ws_error(reply, expected))
                if call.moved:  # draining: the server closes this socket (1012)
                    await self._close_ws()
            await asyncio.sleep(wait)
