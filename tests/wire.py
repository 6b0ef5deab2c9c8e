"""HTTP/1.1 over a raw socket: send exactly the bytes a test wrote, read one response at a time.

An HTTP client library normalises what it sends (dot segments, percent-encoding, header values);
attacks on the proxy's parsing have to leave the test byte for byte, so these tests speak the
protocol themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson

TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class WireReply:
    """One response: status, headers (names lower-cased) and the de-chunked body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    def error_code(self) -> str | None:
        """``error.code`` of an OpenAI-style error body."""
        code: str | None = self.json()["error"]["code"]
        return code


def request_bytes(
    method: str, target: bytes | str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """A request with ``Host`` and, when there is a body, ``Content-Length``; ``target`` as given."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    fields = {"Host": "proxy.test", **(headers or {})}
    if body and "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body))
    head = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in fields.items())
    return method.encode() + b" " + raw_target + b" HTTP/1.1\r\n" + head + b"\r\n" + body


class WireConnection:
    """One keep-alive connection to ``127.0.0.1:port``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> WireConnection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()

    async def send(self, data: bytes) -> None:
        """Write ``data`` as is."""
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = TIMEOUT_S) -> WireReply:
        """Read exactly one response."""
        async with asyncio.timeout(timeout):
            return await self._response()

    async def closed(self, timeout: float = TIMEOUT_S) -> bool:
        """Whether the server closed the connection (EOF) within ``timeout``, sending nothing."""
        assert self.reader is not None
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(1) == b""
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    async def _response(self) -> WireReply:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += data[:-2]
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        else:
            body = await self.reader.read()
        return WireReply(status, headers, body)


async def exchange(port: int, data: bytes, timeout: float = TIMEOUT_S) -> WireReply:
    """Send ``data`` on a new connection and read one response."""
    async with WireConnection(port) as connection:
        await connection.send(data)
        return await connection.response(timeout)
