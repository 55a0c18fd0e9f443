"""The blocking client: ``Client`` and its ``Session``."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

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


class Client:
    """A blocking client for one service, or for several replicas sharing a session store
    (Redis): they are tried in turn when one fails.

    ``timeout`` bounds each HTTP request and each WebSocket reply; ``retry`` bounds the retries
    of one call. Use as a context manager, or call ``close()``.
    """

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
        self._http = httpx.Client(timeout=timeout, headers=headers(api_key))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests -------------------------------------------------------------------------

    def request(
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
        """One call with retries: network errors, 503 (after ``Retry-After``, on the next replica)
        and 504 are retried within ``self.retry``; other errors raise at once. ``resendable=False``
        (a request that is not idempotent) retries only what surely did not reach the server."""
        call = Call(self.retry, self.endpoints, advance)
        while True:
            base = call.begin()
            try:
                r = self._http.request(method, base + path, json=body)
            except httpx.TransportError as e:
                if not resendable and not isinstance(e, httpx.ConnectError):
                    raise ConnectionFailed(f"{method} {path}: {e!r}; not resent: it may have been applied") from e
                wait = call.unreachable(ConnectionFailed(f"{base}: {type(e).__name__}: {e}"))
            else:
                if r.status_code < 300:
                    return r.json() if r.content else None
                err = error_for(r.status_code, error_body(r.text), session=session, expected_step=expected_step)
                wait = call.refused(err, retry_after(r.headers))
            time.sleep(wait)

    def models(self) -> list[dict[str, Any]]:
        """The served models: ``[{"name": ..., "versions": [...]}, ...]``."""
        return list(self.request("GET", "/v1/models")["models"])

    def model(self, name: str, version: str | None = None) -> dict[str, Any]:
        """A model's card: features (with ranges when the card has them), outputs, metrics…"""
        path = f"/v1/models/{name}" + (f"?version={version}" if version else "")
        return dict(self.request("GET", path))

    def predict(
        self, model: str, inputs: Any, *, h0: Any = None, c0: Any = None, version: str | None = None
    ) -> Prediction:
        """Stateless: whole sequences ``[batch, seq, F]`` from ``h0``/``c0`` (zeros when absent)."""
        body: dict[str, Any] = {"inputs": as_nested(inputs)}
        if h0 is not None:
            body["h0"] = as_nested(h0)
        if c0 is not None:
            body["c0"] = as_nested(c0)
        path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + "/predict"
        r = self.request("POST", path, body)
        return Prediction(r["model"], r["version"], r["outputs"], r["hn"], r.get("cn"))

    def session(
        self, model: str, version: str | None = None, *, h0: Any = None, c0: Any = None, delete_on_exit: bool = True
    ) -> Session:
        """A new session (the server keeps its state). As a context manager it is deleted on
        exit unless ``delete_on_exit=False``."""
        body: dict[str, Any] = {"model": model}
        if version is not None:
            body["version"] = version
        if h0 is not None:
            body["h0"] = as_nested(h0)
        if c0 is not None:
            body["c0"] = as_nested(c0)
        # retried like any call: a create whose reply was lost leaves an orphan session that expires after the TTL
        info = self.request("POST", "/v1/sessions", body)
        return Session(self, info, delete_on_exit)

    def resume(self, session_id: str, *, delete_on_exit: bool = False) -> Session:
        """Attach to an existing session at the step the server has."""
        return Session(self, self.request("GET", f"/v1/sessions/{session_id}", session=True), delete_on_exit)

    def restore(self, snapshot: dict[str, Any], *, delete_on_exit: bool = True) -> Session:
        """A new session from ``Session.snapshot()`` (the served model must have the same checksum)."""
        return Session(self, self.request("POST", "/v1/sessions/import", snapshot), delete_on_exit)


class Session:
    """A stream's server-side state. Not for use from several threads at once: a session is
    one ordered stream of readings."""

    def __init__(self, client: Client, info: dict[str, Any], delete_on_exit: bool) -> None:
        self.client = client
        self.id: str = info["session_id"]
        self.model: str = info["model"]
        self.version: str = info["version"]
        self.step_count: int = int(info["step"])
        """Readings the session has consumed: the ``expected_step`` of the next step."""
        self.replayed = False
        """Whether the last step's reply was the server's stored reply to a retry."""
        self.delete_on_exit = delete_on_exit
        self._ws: ClientConnection | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the stream's socket; delete the session if ``delete_on_exit``."""
        self._close_ws()
        if self.delete_on_exit:
            self.delete()

    def step(self, readings: Any) -> list[list[float]]:
        """Send ``T`` readings ``[T, F]`` (or one reading ``[F]``); returns ``T`` output rows."""
        rows = as_rows(readings)
        expected = self.step_count
        r = self.client.request(
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

    def info(self) -> dict[str, Any]:
        return dict(self.client.request("GET", f"/v1/sessions/{self.id}", session=True))

    def resync(self) -> int:
        """Take the server's step as this client's (after a ``StepConflict`` you have decided to accept)."""
        self.step_count = int(self.info()["step"])
        return self.step_count

    def snapshot(self) -> dict[str, Any]:
        """The session's state, step and model checksum; ``Client.restore`` makes a new session from it."""
        return dict(self.client.request("GET", f"/v1/sessions/{self.id}/snapshot", session=True))

    def delete(self) -> None:
        """Delete the session on the server (already gone is fine)."""
        try:
            self.client.request("DELETE", f"/v1/sessions/{self.id}", session=True)
        except ServingError as e:
            if e.status != 404:
                raise

    # -- streaming over the WebSocket ---------------------------------------------------

    def stream(self, readings: Iterable[Any], *, max_chunk: int = 64) -> Iterator[list[float]]:
        """Stream readings over a WebSocket; yields one output row per reading, in order.

        A background thread pulls readings into a queue of ``max_chunk`` (back-pressure: it
        stops pulling when the queue is full). One message is in flight at a time, carrying
        every reading that arrived meanwhile (up to ``max_chunk``), with its ``expected_step``.
        If the socket drops, the client reconnects (to the next replica if the current one is
        gone) and resends the unacknowledged message: the server runs it if it had not, or
        returns the stored reply if it had. One message in flight is what makes this exact:
        the server keeps the reply of the last applied step only.
        """
        feed: queue.Queue[Any] = queue.Queue(max_chunk)
        stop = threading.Event()

        def pull() -> None:
            try:
                for item in readings:
                    if stop.is_set():
                        return
                    feed.put(as_reading(item))
            except BaseException as e:  # handed to the consumer, raised there
                feed.put(e)
            feed.put(_END)

        feeder = threading.Thread(target=pull, name=f"lstm-stream-{self.id[-6:]}", daemon=True)
        feeder.start()
        try:
            done = False
            while not done:
                item = feed.get()
                batch: list[list[float]] = []
                while True:
                    if item is _END:
                        done = True
                        break
                    if isinstance(item, BaseException):
                        raise item
                    batch.append(item)
                    if len(batch) >= max_chunk:
                        break
                    try:
                        item = feed.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    yield from self._ws_step(batch)
        finally:
            stop.set()
            while not feed.empty():  # unblock the feeder's put
                feed.get_nowait()

    def _connect(self) -> ClientConnection:
        c = self.client
        connection = connect(
            c.endpoints.ws(f"/v1/sessions/{self.id}/stream"),
            additional_headers=headers(c.api_key),
            open_timeout=c.timeout,
            max_size=None,
        )
        # entered as a context manager (closed in _close_ws): the form every websockets >= 13 supports
        return connection.__enter__()

    def _close_ws(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def _ws_step(self, rows: list[list[float]]) -> list[list[float]]:
        expected = self.step_count
        message = json.dumps({"inputs": rows, "expected_step": expected, "id": expected})
        c = self.client
        call = Call(c.retry, c.endpoints, len(rows))
        while True:
            base = call.begin()
            try:
                if self._ws is None:
                    self._ws = self._connect()
                self._ws.send(message)
                reply = json.loads(self._ws.recv(timeout=c.timeout))
            except InvalidStatus as e:
                self._ws = None
                if e.response.status_code in (401, 403):
                    raise Unauthorized("a valid API key is required", e.response.status_code) from e
                wait = call.unreachable(ConnectionFailed(f"{base}: WebSocket handshake: {e}"))
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as e:
                self._close_ws()
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
                    self._close_ws()
            time.sleep(wait)
