"""A real TCP proxy that resets connections: at random (each forwarded chunk, either way, may
reset both sockets instead of passing on) and on demand (``cut_all``). It runs its own event
loop in a thread, so blocking and asyncio clients can both go through it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter

LINGER_0 = struct.pack("ii", 1, 0)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, not FIN: the peer sees a connection reset, as when a network path dies."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
    writer.transport.abort()


class ResetProxy:
    """Forwards 127.0.0.1:<port> to ``target_port``. ``p_request``/``p_reply``: the chance that a
    chunk going to the server / coming back is dropped with a reset of both sides."""

    def __init__(self, target_port: int, p_request: float = 0.0, p_reply: float = 0.0, seed: int = 0) -> None:
        self.target_port = target_port
        self.p = {"request": p_request, "reply": p_reply}
        self.rng = random.Random(seed)
        self.resets: Counter[str] = Counter()
        self.connections = 0
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="reset-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ResetProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for pair in list(self._open):
            for w in pair:
                _reset(w)
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in handlers:
            t.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def cut_all(self) -> int:
        """Reset every open connection now; returns how many were cut."""

        async def cut() -> int:
            pairs = list(self._open)
            for client, upstream in pairs:
                _reset(client)
                _reset(upstream)
            self.resets["cut"] += len(pairs)
            return len(pairs)

        return asyncio.run_coroutine_threadsafe(cut(), self._loop).result(10)

    def set_rates(self, p_request: float, p_reply: float) -> None:
        self._loop.call_soon_threadsafe(self.p.update, {"request": p_request, "reply": p_reply})

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _reset(cw)
            return
        self.connections += 1
        pair = (cw, sw)
        self._open.add(pair)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, way: str) -> None:
            try:
                while data := await src.read(65536):
                    if self.rng.random() < self.p[way]:
                        self.resets[way] += 1
                        _reset(cw)
                        _reset(sw)
                        return
                    dst.write(data)
                    await dst.drain()
                dst.write_eof()
            except (OSError, RuntimeError):
                _reset(cw)
                _reset(sw)

        try:
            await asyncio.gather(pipe(cr, sw, "request"), pipe(sr, cw, "reply"))
        finally:
            self._open.discard(pair)
            for w in pair:
                w.close()
