"""A TCP proxy between clients and one server, for fault tests (and a chaos suite).

It forwards bytes both ways; `pause` stops forwarding in one or both directions (the bytes
wait in the proxy, nothing is lost) until `resume`; `drop` aborts every open connection at
once (both sides see a reset); `refuse` makes it abort new connections as they arrive.

    proxy = await TcpProxy("127.0.0.1", 5432).start()
    store = PostgresStore(proxy.dsn("postgresql://postgres@127.0.0.1:5432/test"))
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

UP, DOWN = "up", "down"  # client -> server, server -> client


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `host`:`target_port`, with faults on demand."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host, self.target_port = host, target_port
        self.port = 0
        self.refusing = False
        self.accepted = 0  # connections accepted (and forwarded)
        self._flowing = {UP: asyncio.Event(), DOWN: asyncio.Event()}
        self._held = {UP: 0, DOWN: 0}
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.resume()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def dsn(self, url: str) -> str:
        """`url` (postgresql://user:pw@host:port/db?...) pointed at the proxy instead."""
        parts = urlsplit(url)
        user, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user}{at}127.0.0.1:{self.port}"))

    def pause(self, *, up: bool = True, down: bool = True) -> None:
        """Stop forwarding client -> server (`up`) and/or server -> client (`down`)."""
        for direction, stop in ((UP, up), (DOWN, down)):
            if stop:
                self._flowing[direction].clear()

    def resume(self) -> None:
        """Forward both ways again (what waited goes first)."""
        for event in self._flowing.values():
            event.set()

    def held(self, direction: str = UP) -> int:
        """Bytes read from one side and not yet forwarded to the other (paused)."""
        return self._held[direction]

    def drop(self) -> None:
        """Abort every open connection now, both sides (what was held is lost)."""
        for client, server in list(self._links):
            client.transport.abort()
            server.transport.abort()
        self._links.clear()
        self._held = {UP: 0, DOWN: 0}

    def refuse(self, on: bool = True) -> None:
        """Abort new connections as soon as they arrive (or accept them again)."""
        self.refusing = on

    async def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        link = (writer, up_writer)
        self._links.add(link)
        for task in (self._pipe(reader, up_writer, UP), self._pipe(up_reader, writer, DOWN)):
            spawned = asyncio.ensure_future(task)
            self._tasks.add(spawned)
            spawned.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                self._held[direction] += len(data)
                await self._flowing[direction].wait()
                if writer.transport.is_closing():
                    break
                self._held[direction] -= len(data)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()  # one side closed or failed: the other goes too
