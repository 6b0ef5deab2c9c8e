"""A response whose head is written by hand: the cache hit's last step, in one socket write.

Hand-written because the profile says so (``bench/profiles/text_hit.txt``): for a text hit,
aiohttp's ``web.Response`` spent more on itself than on the socket. Its ``__init__`` builds a
``CIMultiDict`` and a content type, ``prepare`` walks the headers for chunking, compression,
cookies, ``Date``, ``Server`` and ``Connection``, and ``_serialize_headers`` re-checks every
name and value for CR/LF, about a tenth of a text hit's CPU. A hit's head is a fixed list of
fields whose values the proxy made itself (a content type, ``X-Cache``, ``Age`` digits, a hex
key), so it is a handful of bytes concatenated; this class emits exactly what ``web.Response``
would (``tests/test_ready_response.py`` compares the two on the wire, byte for byte, for
keep-alive, ``Connection: close`` and HTTP/1.0 requests).

It still goes through aiohttp's request handler (keep-alive, draining, ``force_close``, access
bookkeeping) and its ``StreamWriter``'s flow control and counters (``output_size``, ``buffer_size``,
``drain``), which ``tests/test_ready_response.py`` checks against aiohttp's own response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import ClientConnectionResetError, web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter

_SERVER = f"Server: {SERVER_SOFTWARE}\r\n".encode()
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE_10 = b"Connection: keep-alive\r\n"
_STATUS_11 = b"HTTP/1.1 200 OK\r\n"
_STATUS_10 = b"HTTP/1.0 200 OK\r\n"
# Bodies from this size on are written as a vector with the head instead of being joined to it.
_VECTOR_FROM = 64 * 1024


class ReadyResponse(web.StreamResponse):
    """A 200 with a body known in full and its header lines already encoded (``Name: value\r\n``
    each; the caller's own values, never a client's: nothing here checks them for CR or LF).

    ``Content-Length``, ``Date``, ``Server`` and ``Connection`` are added at ``prepare``, as
    aiohttp adds them: the connection's fate (keep-alive, a draining server's ``force_close``)
    is only known then.
    """

    def __init__(self, lines: bytes, body: bytes) -> None:
        super().__init__(status=200)
        self._lines = lines
        self._ready = body
        self._head: bytes | None = None  # status line and header fields, once prepared

    @property
    def content_length(self) -> int:
        """The body's length (what ``web.Response`` reports before it is sent, too)."""
        return len(self._ready)

    @content_length.setter
    def content_length(self, value: int | None) -> None:
        raise RuntimeError("Content length is set automatically")

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is not None:
            return self._payload_writer
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = request.keep_alive
        self._keep_alive = keep_alive
        version = request.version
        # aiohttp's parser answers 400 to any version but HTTP/1.0 and HTTP/1.1.
        if version == HttpVersion11:
            connection = b"" if keep_alive else _CLOSE
        else:
            connection = _KEEP_ALIVE_10 if keep_alive else b""
        self._req = request
        writer = self._payload_writer = request._payload_writer
        await request._prepare_hook(self)  # the app's on_response_prepare signals, like any response
        body = self._ready
        writer.length = len(body)
        self._head = b"".join(
            (
                _STATUS_11 if version == HttpVersion11 else _STATUS_10,
                self._lines,
                b"Content-Length: %d\r\n" % len(body),
                b"Date: ",
                rfc822_formatted_time().encode(),  # aiohttp's, formatted once a second
                b"\r\n",
                _SERVER,
                connection,
                b"\r\n",
            )
        )
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        """The head and the body in one call to the transport, without joining a large body.

        aiohttp joins head and body into one new buffer before writing (``StreamWriter._writelines``
        on Python < 3.12.9, where its ``writelines`` is off): for a 2 MB image hit that is a 2 MB
        allocation and copy per request, and fresh pages for the kernel to copy from (measured:
        ~25 % more system time per image hit than the body alone). A large body goes as a vector
        (uvloop's ``writelines`` is a ``writev``; asyncio's joins, as before); a small one is
        joined (one short copy beats a vector).
        """
        if self._eof_sent:
            return
        assert not data, "the body of a ReadyResponse is given at construction"
        writer = self._payload_writer
        if self._head is None or writer is None:  # not prepared: aiohttp's own error for that
            await super().write_eof()
            return
        head, body = self._head, self._ready
        self._head = None
        transport = writer.transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")
        size = len(head) + len(body)
        writer.buffer_size += size
        writer.output_size += size
        if len(body) < _VECTOR_FROM:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        await writer.drain()  # flow control, as aiohttp's own write_eof
        await super().write_eof()  # the writer's and the response's end-of-message bookkeeping
