"""An upstream that records every byte it receives and answers with exactly the bytes a test scripts.

The simulator (``fake_upstream``) is an aiohttp app: it decodes paths and frames bodies before a
test can look at them. This one works on the raw socket, so a test can assert what really left the
proxy (the request target as sent, every header, whether a chunked body was ever completed) and
can answer what no well-behaved server would (a 200 cut short, a wrong Content-Length, non-JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import orjson

_HEAD_LIMIT = 256 * 1024


@dataclass(slots=True)
class Received:
    """One request as it arrived: head bytes exactly, body bytes, and whether the body was whole."""

    head: bytes
    body: bytes = b""
    complete: bool = False

    @property
    def method(self) -> str:
        """The request method."""
        return self.head.split(b" ", 1)[0].decode("latin-1")

    @property
    def target(self) -> str:
        """The request target exactly as sent (path and query, nothing decoded)."""
        return self.head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")

    def headers(self) -> list[tuple[str, str]]:
        """Header fields in order, names lower-cased."""
        lines = self.head.split(b"\r\n")[1:]
        pairs = [line.split(b":", 1) for line in lines if b":" in line]
        return [
            (name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")) for name, value in pairs
        ]

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, if sent."""
        return next((value for key, value in self.headers() if key == name.lower()), None)


def http_response(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    content_length: int | None = None,
) -> bytes:
    """A raw HTTP/1.1 response; ``content_length`` may lie about ``body`` on purpose."""
    fields = {"Content-Type": "application/json", "Connection": "close", **(headers or {})}
    fields["Content-Length"] = str(len(body) if content_length is None else content_length)
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode("latin-1") + body


def json_response(payload: object, status: int = 200) -> bytes:
    """A well-formed JSON answer."""
    return http_response(status, orjson.dumps(payload))


Answer = Callable[[Received], bytes]


def _list_of_nothing(_request: Received) -> bytes:
    return json_response({"object": "list", "data": []})


class RawUpstream:
    """``async with RawUpstream(answer) as upstream``: ``upstream.url`` ends in ``/v1``.

    ``answer`` maps each complete request to the raw bytes sent back (the connection is closed
    after each answer); ``delay_s`` holds every answer back that long (single-flight tests).
    ``received`` lists every request, complete or not, in arrival order.
    """

    def __init__(self, answer: Answer = _list_of_nothing, delay_s: float = 0.0) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.received: list[Received] = []
        self._server: asyncio.Server | None = None
        self._port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """Base URL ending in /v1."""
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def complete(self) -> list[Received]:
        """The requests whose body arrived whole (the ones an upstream could act on)."""
        return [r for r in self.received if r.complete]

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            received = await self._read(reader)
            if received is not None and received.complete:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(self.answer(received))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader) -> Received | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        received = Received(head)
        self.received.append(received)
        length = received.header("content-length")
        if (received.header("transfer-encoding") or "").lower() == "chunked":
            await self._read_chunked(reader, received)
        elif length is not None:
            received.body = await reader.read(int(length)) if int(length) else b""
            while len(received.body) < int(length):
                more = await reader.read(int(length) - len(received.body))
                if not more:
                    return received
                received.body += more
            received.complete = True
        else:
            received.complete = True
        return received

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader, received: Received) -> None:
        """Chunks until the terminating zero-size chunk; a connection lost first leaves it incomplete."""
        while True:
            try:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
            except (asyncio.IncompleteReadError, ValueError):
                return
            if size == 0:
                received.complete = True
                return
            received.body += data[:-2]
