"""A TCP relay that delays every chunk in both directions: a slow network link to a real server.

Used to widen real races (a background store still in flight while the next request arrives)
without touching the proxy: the proxy talks to Redis through ``SlowLink(...).url``.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from tests.proxy_harness import free_port


class SlowLink:
    """Listens on 127.0.0.1:<free port> and relays to ``target_port``, each chunk ``delay_s`` late."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """A ``redis://`` URL through the link (for a Redis target)."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Chunks keep their order: each waits its delay after the previous one was written.
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(1 << 16):
                due = loop.time() + self.delay_s
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pipe(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def __aenter__(self) -> SlowLink:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
