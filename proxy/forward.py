"""A cache miss: forward to the upstream, stream the answer to the client live, keep a copy to store.

The copy is kept only while it can still be stored (status 200, under the entry size bound), and
a client that goes away does not stop the read: the generation is paid for, so it is finished and
stored (``PROXY_FINISH_ON_DISCONNECT``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import error_body
from proxy.streaming import SSEParser, StreamAssembler, parse_chunk, sse
from proxy.upstream import response_headers, upstream_failure

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MissOutcome:
    """What came back from the upstream, for storing and accounting."""

    status: int = 0
    document: dict[str, Any] | None = None  # complete 200 response, parsed
    raw: bytes | None = None  # exact JSON bytes the client got (non-stream), else None
    upstream_seconds: float = 0.0
    ttfb_seconds: float = 0.0
    error_kind: str | None = None  # status_4xx | status_5xx | timeout | connect | stream_cut
    error_body: bytes = b""
    usage: dict[str, Any] | None = None  # what the upstream billed, complete or not
    stream_complete: bool = False  # a stream that ended with [DONE]


class ClientWriter:
    """Writes to the client until it goes away, then silently drops (the upstream read goes on)."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.gone = False
        self.finished = False

    async def prepare(self, request: web.Request) -> None:
        """Send the headers; a client already gone is noted, not raised."""
        try:
            await self.response.prepare(request)
        except (ConnectionError, RuntimeError):
            self.gone = True

    async def write(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            await self.response.write(data)
        except (ConnectionError, RuntimeError):
            self.gone = True

    async def finish(self) -> None:
        if self.gone or self.finished:
            return
        self.finished = True
        try:
            await self.response.write_eof()
        except (ConnectionError, RuntimeError):
            self.gone = True


def _complete(doc: Any) -> bool:
    """A complete chat completion: choices present and each with a finish_reason."""
    if not isinstance(doc, dict):
        return False
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(isinstance(c, dict) and c.get("finish_reason") for c in choices)


async def forward_miss(
    request: web.Request,
    *,
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: CIMultiDict[str],
    extra_headers: dict[str, str],
    stream: bool,
    client_wants_usage: bool,
    keep_limit: int,
    finish_on_disconnect: bool,
) -> tuple[ClientWriter, MissOutcome]:
    """Forward one chat completion; returns the client writer (maybe not finished) and the outcome.

    A complete answer is left unfinished (JSON body without EOF, stream without ``[DONE]``) so the
    caller can store it before the client sees the end: a client that got an answer can rely on
    the next identical request being a hit.

    Raises ProxyError (502/504) when the upstream fails before answering.
    """
    outcome = MissOutcome()
    started = time.perf_counter()
    try:
        upstream = await session.post(url, data=body, headers=headers)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        outcome.error_kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "connect"
        raise upstream_failure(exc) from exc
    outcome.ttfb_seconds = time.perf_counter() - started
    outcome.status = upstream.status
    async with upstream:
        headers_out = response_headers(upstream.headers)
        headers_out.update(extra_headers)
        response = web.StreamResponse(status=upstream.status, headers=headers_out)
        writer = ClientWriter(response)
        await writer.prepare(request)
        if upstream.status != 200:
            outcome.error_kind = "status_5xx" if upstream.status >= 500 else "status_4xx"
            outcome.error_body = await _relay_all(upstream, writer, keep_limit)
        elif stream and upstream.content_type == "text/event-stream":
            await _relay_stream(upstream, writer, outcome, client_wants_usage, finish_on_disconnect)
        else:
            await _relay_json(upstream, writer, outcome, keep_limit, finish_on_disconnect)
    outcome.upstream_seconds = time.perf_counter() - started
    return writer, outcome


async def _relay_all(upstream: aiohttp.ClientResponse, writer: ClientWriter, keep_limit: int) -> bytes:
    kept = bytearray()
    try:
        async for chunk in upstream.content.iter_any():
            if len(kept) < keep_limit:
                kept += chunk
            await writer.write(chunk)
    except (TimeoutError, aiohttp.ClientError):
        pass
    await writer.finish()
    return bytes(kept)


async def _relay_json(
    upstream: aiohttp.ClientResponse,
    writer: ClientWriter,
    outcome: MissOutcome,
    keep_limit: int,
    finish_on_disconnect: bool,
) -> None:
    kept: bytearray | None = bytearray()
    try:
        async for chunk in upstream.content.iter_any():
            if kept is not None:
                kept += chunk
                if len(kept) > keep_limit:
                    kept = None  # too large to store: pass through only
            await writer.write(chunk)
            if writer.gone and not finish_on_disconnect:
                return
    except (TimeoutError, aiohttp.ClientError) as exc:
        outcome.error_kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "stream_cut"
        log.warning("upstream body cut: %r", exc)
        return  # the client's response ends short; nothing is stored
    if kept is not None:
        raw = bytes(kept)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            outcome.usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else None
        if _complete(doc):
            outcome.document, outcome.raw = doc, raw
    # writer.finish() is left to the caller so the entry is stored before the client sees the end.


async def _relay_stream(
    upstream: aiohttp.ClientResponse,
    writer: ClientWriter,
    outcome: MissOutcome,
    client_wants_usage: bool,
    finish_on_disconnect: bool,
) -> None:
    parser = SSEParser()
    assembler = StreamAssembler()
    try:
        async for chunk in upstream.content.iter_any():
            for event in parser.feed(chunk):
                if event.data is None:
                    await writer.write(event.raw)
                    continue
                if event.data.strip() == b"[DONE]":
                    assembler.done = True
                    outcome.usage = assembler.usage
                    outcome.stream_complete = True
                    outcome.document = assembler.response() if assembler.complete else None
                    return  # [DONE] itself is written by the caller, after storing
                parsed = parse_chunk(event.data)
                if parsed is not None:
                    assembler.add(parsed)
                    if not client_wants_usage and not parsed.get("choices") and parsed.get("usage"):
                        continue  # we asked for usage; the client did not
                await writer.write(event.raw)
            if writer.gone and not finish_on_disconnect:
                break
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.warning("upstream stream cut: %r", exc)
    outcome.error_kind = "stream_cut"
    outcome.usage = assembler.usage
    message = "The upstream stream ended before completion; the response is incomplete."
    await writer.write(sse(error_body(message, "server_error", "upstream_stream_cut")))
    await writer.finish()
