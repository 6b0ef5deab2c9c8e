"""A cache miss: forward to the upstream, stream the answer to the client live, keep a copy to store.

Endpoint-agnostic: the endpoint says whether a JSON answer is complete and reads a stream through
a ``StreamFold``; the relay moves bytes, bounds what it keeps and maps failures.

The copy is kept only while it can still be stored (status 200, under the entry size bound), and
a client that goes away does not stop the read: the generation is paid for, so it is finished and
stored (``PROXY_FINISH_ON_DISCONNECT``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import upstream_failure, upstream_invalid_response
from proxy.obs.logs import clip
from proxy.upstream.session import response_headers
from proxy.upstream.sse import SSEEvent, SSEParser

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MissOutcome:
    """What came back from the upstream, for storing and accounting."""

    status: int = 0
    document: dict[str, Any] | None = None  # complete 200 response, parsed
    raw: bytes | None = None  # exact JSON bytes the client got (non-stream), else None
    upstream_seconds: float = 0.0
    ttfb_seconds: float = 0.0
    error_kind: str | None = (
        None  # status_4xx | status_5xx | timeout | connect | stream_cut | invalid_response
    )
    error_body: bytes = b""
    usage: dict[str, Any] | None = None  # what the upstream billed, complete or not
    stream_complete: bool = False  # a stream that ended with [DONE]
    invalid: bool = False  # a 200 whose body was cut short or not JSON: the client got a 502
    # Held back, for the caller to send after storing: a complete stream's final event, or a
    # validated JSON answer's whole body (with its headers, in one write: ``HeldResponse``).
    tail: bytes = b""

    def shared_error(self, shareable: frozenset[int]) -> tuple[int, bytes] | None:
        """Status and body every identical request would get too (a flight's followers get a copy)."""
        if self.invalid:
            return 502, self.error_body
        if self.status in shareable and self.error_body:
            return self.status, self.error_body
        return None


class HeldResponse(web.StreamResponse):
    """A response whose headers wait for its first body bytes and go out with them, in one write.

    aiohttp's ``web.Response`` does the same (its ``_send_headers_immediately`` is False); a
    ``StreamResponse`` sends them at ``prepare``. A JSON miss used to cost three writes to the
    client (headers, body, chunked end) and chunked framing; now it is one, with a Content-Length.
    ``tests/test_server.py`` pins the aiohttp attribute this relies on.
    """

    _send_headers_immediately = False


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


class StreamFold(Protocol):
    """What an endpoint says about its streamed answer, event by event (chat: ``endpoints.chat_stream``).

    ``feed`` returns the bytes the client gets for an event now (usually ``event.raw``) or None to
    hold it back; ``done`` turns true on the stream's final event (the relay stops there and keeps
    ``end()`` for the caller to send once the answer is stored).
    """

    @property
    def done(self) -> bool: ...
    @property
    def usage(self) -> dict[str, Any] | None: ...
    def feed(self, event: SSEEvent) -> bytes | None: ...
    def document(self) -> dict[str, Any] | None: ...
    def end(self) -> bytes: ...
    def cut(self) -> bytes: ...


async def forward_miss(
    request: web.Request,
    *,
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: CIMultiDict[str],
    extra_headers: dict[str, str],
    complete: Callable[[Any], bool],
    fold: StreamFold | None,
    keep_limit: int,
    finish_on_disconnect: bool,
) -> tuple[ClientWriter, MissOutcome]:
    """Forward one request; returns the client writer (maybe not finished) and the outcome.

    ``complete`` says whether a parsed JSON answer is storable; ``fold`` (a streamed request) reads
    the stream event by event.

    A complete answer is left unfinished (JSON body without EOF, stream without ``[DONE]``) so the
    caller can store it before the client sees the end: a client that got an answer can rely on
    the next identical request being a hit.

    Raises ProxyError (502/504) when the upstream fails before answering.
    """
    outcome = MissOutcome()
    started = time.perf_counter()
    upstream = await post(session, url, body, headers, outcome)
    async with upstream:
        headers_out = response_headers(upstream.headers)
        headers_out.update(extra_headers)
        if upstream.status == 200 and (fold is None or upstream.content_type != "text/event-stream"):
            writer = await _answer_json(
                request,
                upstream,
                headers_out=headers_out,
                extra_headers=extra_headers,
                outcome=outcome,
                complete=complete,
                keep_limit=keep_limit,
                finish_on_disconnect=finish_on_disconnect,
            )
        else:
            writer = ClientWriter(web.StreamResponse(status=upstream.status, headers=headers_out))
            await writer.prepare(request)
            if upstream.status != 200:
                outcome.error_kind = "status_5xx" if upstream.status >= 500 else "status_4xx"
                outcome.error_body = await _relay_all(upstream, writer, keep_limit)
            else:
                assert fold is not None
                await _relay_stream(upstream, writer, outcome, fold, finish_on_disconnect)
    outcome.upstream_seconds = time.perf_counter() - started
    return writer, outcome


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: CIMultiDict[str], outcome: MissOutcome
) -> aiohttp.ClientResponse:
    """Send one request upstream; its status and time to first byte go into ``outcome``.

    Raises ProxyError (502/504) when the upstream fails before answering.
    """
    started = time.perf_counter()
    try:
        upstream = await session.post(url, data=body, headers=headers)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        outcome.error_kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "connect"
        raise upstream_failure(exc) from exc
    outcome.ttfb_seconds = time.perf_counter() - started
    outcome.status = upstream.status
    return upstream


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


async def _answer_json(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    *,
    headers_out: CIMultiDict[str],
    extra_headers: dict[str, str],
    outcome: MissOutcome,
    complete: Callable[[Any], bool],
    keep_limit: int,
    finish_on_disconnect: bool,
) -> ClientWriter:
    """A non-streamed 200: read whole and validated before the client sees its status.

    A body cut short (connection lost, wrong Content-Length, broken chunking, read timeout) or
    not JSON is answered 502 ``upstream_invalid_response`` instead of a 200 the SDK cannot parse,
    and is never stored. A body over ``keep_limit`` (``PROXY_CACHE_MAX_ENTRY_BYTES``) could not be
    stored anyway: it is streamed through as it comes, unvalidated.
    """
    kept = bytearray()
    try:
        async for chunk in upstream.content.iter_any():
            kept += chunk
            if len(kept) > keep_limit:
                break
        else:
            doc = orjson.loads(kept)
            return await _answer_parsed(request, headers_out, outcome, bytes(kept), doc, complete=complete)
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
        log.warning("upstream 200 with an unusable body: %s", clip(repr(exc)))
        return await _answer_invalid(request, extra_headers, outcome, exc)
    # Too large to store: pass it through as it comes.
    writer = ClientWriter(web.StreamResponse(status=200, headers=headers_out))
    await writer.prepare(request)
    await writer.write(bytes(kept))
    del kept
    try:
        async for chunk in upstream.content.iter_any():
            await writer.write(chunk)
            if writer.gone and not finish_on_disconnect:
                break
    except (TimeoutError, aiohttp.ClientError) as exc:
        outcome.error_kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "stream_cut"
        log.warning("upstream body cut: %s", clip(repr(exc)))
    return writer


async def _answer_parsed(
    request: web.Request,
    headers_out: CIMultiDict[str],
    outcome: MissOutcome,
    raw: bytes,
    doc: Any,
    *,
    complete: Callable[[Any], bool],
) -> ClientWriter:
    """A validated JSON answer, held back whole (``outcome.tail``: the caller stores it first, then
    sends it, headers and body in one write); kept to store when complete."""
    if isinstance(doc, dict):
        outcome.usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else None
    if complete(doc):
        outcome.document, outcome.raw = doc, raw
    outcome.tail = raw
    response = HeldResponse(status=200, headers=headers_out)
    response.content_length = len(raw)
    writer = ClientWriter(response)
    await writer.prepare(request)
    return writer


async def _answer_invalid(
    request: web.Request, extra_headers: dict[str, str], outcome: MissOutcome, exc: BaseException
) -> ClientWriter:
    """502 for a 200 the client could not use; the caller settles it as billed and shares it."""
    error = upstream_invalid_response()
    outcome.invalid = True
    outcome.error_kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "invalid_response"
    outcome.error_body = error.body()
    response = web.StreamResponse(
        status=error.status, headers={**extra_headers, "Content-Type": "application/json"}
    )
    writer = ClientWriter(response)
    await writer.prepare(request)
    await writer.write(outcome.error_body)
    return writer


async def _relay_stream(
    upstream: aiohttp.ClientResponse,
    writer: ClientWriter,
    outcome: MissOutcome,
    fold: StreamFold,
    finish_on_disconnect: bool,
) -> None:
    parser = SSEParser()
    try:
        async for chunk in upstream.content.iter_any():
            for event in parser.feed(chunk):
                out = fold.feed(event)
                if fold.done:
                    outcome.usage = fold.usage
                    outcome.stream_complete = True
                    outcome.document = fold.document()
                    outcome.tail = fold.end()  # written by the caller, after storing
                    return
                if out is not None:
                    await writer.write(out)
            if writer.gone and not finish_on_disconnect:
                break
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.warning("upstream stream cut: %s", clip(repr(exc)))
    outcome.error_kind = "stream_cut"
    outcome.usage = fold.usage
    await writer.write(fold.cut())
    await writer.finish()
