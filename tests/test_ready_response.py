"""``proxy.cache.ready.ReadyResponse`` (a cache hit's hand-written head) answers exactly what
aiohttp's ``web.Response`` answers, on the wire, whatever the connection's fate."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from proxy.cache.ready import ReadyResponse
from proxy.web.server import ProxyRunner
from tests.proxy_harness import free_port

SMALL = b'{"id":"chatcmpl-1","object":"chat.completion"}'
LARGE = b'{"data":"' + b"A" * 2_000_000 + b'"}'  # over the size written as a vector
FIELDS = {"X-Cache": "HIT", "Age": "7", "X-Cache-Key": "ab" * 32}
_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


def _aiohttp_answer(body: bytes) -> web.StreamResponse:
    return web.Response(body=body, content_type="application/json", headers=FIELDS)


def _ready_answer(body: bytes) -> web.StreamResponse:
    lines = "".join(
        f"{name}: {value}\r\n" for name, value in {**FIELDS, "Content-Type": "application/json"}.items()
    )
    return ReadyResponse(lines.encode(), body)


def _app() -> web.Application:
    """``/{kind}/{size}``: the same answer by ``web.Response`` (``aiohttp``) or ``ReadyResponse``;
    ``?close`` makes the handler force the connection closed (a draining server does that)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        body = SMALL if request.match_info["size"] == "small" else LARGE
        make = _ready_answer if request.match_info["kind"] == "ready" else _aiohttp_answer
        response = make(body)
        if "close" in request.query:
            response.force_close()
        await request.read()
        return response

    app = web.Application()
    app.router.add_post("/{kind}/{size}", answer)
    return app


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """The app on the proxy's own server class (``ProxyRunner``), on a free loopback port."""
    runner = ProxyRunner(_app(), header_timeout=5.0, shutdown_timeout=1.0)
    await runner.setup()
    number = free_port()
    site = web.TCPSite(runner, "127.0.0.1", number)
    await site.start()
    try:
        yield number
    finally:
        await runner.cleanup()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    return head + await reader.readexactly(length)


async def _exchange(port: int, request: bytes, count: int) -> tuple[list[bytes], bool]:
    """Send ``request`` up to ``count`` times on one connection; the answers (Date line blanked)
    and whether the server closed the connection after the last one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers: list[bytes] = []
    try:
        for _ in range(count):
            writer.write(request)
            answer = await _read_response(reader)
            answers.append(_DATE.sub(b"\r\nDate: -\r\n", answer))
            keep = b"HTTP/1.1" in answer[:8] or b"Connection: keep-alive" in answer
            if b"Connection: close" in answer or not keep:
                break  # the server said it closes: no second request on this connection
        closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
    except TimeoutError:
        closed = False
    finally:
        writer.close()
    return answers, closed


def _request(path: str, version: str, connection: str | None) -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: x", "Content-Length: 2", "Content-Type: application/json"]
    if connection is not None:
        lines.append(f"Connection: {connection}")
    return ("\r\n".join(lines) + "\r\n\r\n{}").encode()


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize(
    ("version", "connection", "query"),
    [
        pytest.param("1.1", None, "", id="http11-keep-alive"),
        pytest.param("1.1", "close", "", id="http11-client-closes"),
        pytest.param("1.1", None, "?close", id="http11-server-closes"),
        pytest.param("1.0", None, "", id="http10"),
        pytest.param("1.0", "keep-alive", "", id="http10-keep-alive"),
    ],
)
async def test_ready_response_is_byte_for_byte_what_aiohttp_sends(
    port: int, size: str, version: str, connection: str | None, query: str
) -> None:
    """Status line, every header field in aiohttp's order (Content-Length, Date, Server,
    Connection as the connection requires), the body; the connection kept or closed alike."""
    theirs, theirs_closed = await _exchange(port, _request(f"/aiohttp/{size}{query}", version, connection), 2)
    ours, ours_closed = await _exchange(port, _request(f"/ready/{size}{query}", version, connection), 2)
    assert ours == theirs
    assert ours_closed == theirs_closed
    keeps_alive = (version, connection, query) in {("1.1", None, ""), ("1.0", "keep-alive", "")}
    assert len(ours) == (2 if keeps_alive else 1)
    assert ours_closed is not keeps_alive
    assert ours[0].endswith(SMALL if size == "small" else LARGE)
