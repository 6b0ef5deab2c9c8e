"""What every request passes through: one middleware that times, guards and renders errors.

``front_middleware`` does, in this order (outermost first), what used to be three middlewares:

- timing: latency, size and outcome of every ``/v1`` request (``obs.metrics``);
- error rendering: the one place a ``ProxyError`` (or aiohttp's own HTTP error, or a bug)
  becomes OpenAI's ``{"error": {...}}`` JSON, so SDKs raise the right exception class;
- the request guard: checks before any handler reads the request (target, headers, body
  encoding). They run on every route (``/v1``, ``/admin``, ``/metrics``...), so no handler ever
  sees a path a decoder could re-interpret, a header it could not forward, or a compressed body.

One middleware, not three: each aiohttp middleware is a coroutine (and a ``functools.partial``)
per request; the three layers were about 3 % of a text hit (``bench/profiles/``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.errors import ProxyError, error_body, invalid_header, unsupported_encoding
from proxy.obs.logs import clip
from proxy.obs.metrics import OTHER as OTHER_ENDPOINT
from proxy.obs.metrics import ProxyMetrics
from proxy.state import REQUEST_CACHE, REQUEST_ENDPOINT, REQUEST_MODEL, TARGET
from proxy.util.memo import remember
from proxy.web.paths import Target, parse_target
from proxy.web.server import close_after_response

log = logging.getLogger(__name__)

_IDENTITY = frozenset({"", "identity"})
_CONSOLE_SLASH = "/ui/"
_TIMED_PREFIX = "/v1/"

# Request targets remembered by the guard (a client may send any number of distinct ones).
_MAX_TARGETS = 1024


def front_middleware(routes: frozenset[str], metrics: ProxyMetrics) -> Middleware:
    """Time every ``/v1`` request and count it by route (one of ``routes``, else ``/v1/other``),
    model, status class and cache result; render every error as OpenAI JSON; guard every request
    (400 for a path or header the proxy will not interpret, 415 for a compressed body).

    The checked target of each raw target is remembered (bounded): a proxy sees the same few
    paths all day, and checking one character by character was 3 % of a text hit.
    """
    targets: dict[str, Target] = {}

    def guard(request: web.Request) -> None:
        raw = request.raw_path
        if raw == _CONSOLE_SLASH:
            # The console lives at /ui (an empty segment is refused everywhere else); people type /ui/.
            raise web.HTTPPermanentRedirect("/ui")
        target = targets.get(raw)
        if target is None:
            target = remember(targets, raw, parse_target(raw), _MAX_TARGETS)
        request[TARGET] = target
        headers = request.headers
        check_headers(headers)
        # RFC 9110 §8.4: a server may answer 415 to a content coding it does not accept. Inflating
        # would turn 61 KB on the wire into 60 MB in memory; the body is not even read (the server
        # never decompresses, see server.ProxyRunner) and the connection is closed after the answer.
        if "Content-Encoding" in headers:
            codings = ",".join(headers.getall("Content-Encoding"))
            if any(coding.strip().lower() not in _IDENTITY for coding in codings.split(",")):
                close_after_response(request)
                raise unsupported_encoding()

    def observe(
        request: web.Request, path: str, response: web.StreamResponse | None, duration_s: float
    ) -> None:
        """Count one finished ``/v1`` request (status 500 when no response came out of the handler)."""
        status, sent = 500, 0
        if response is not None:
            status = response.status
            # A plain web.Response is written after the middleware returns: use its known length.
            sent = response.body_length if response.prepared else (response.content_length or 0)
        metrics.observe_request(
            path if path in routes else "/v1/other",
            request.get(REQUEST_MODEL, "none"),
            status,
            request.get(REQUEST_CACHE, "none"),
            duration_s,
            sent,
            endpoint=request.get(REQUEST_ENDPOINT, OTHER_ENDPOINT),
        )

    @web.middleware
    async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        timed = path.startswith(_TIMED_PREFIX)
        started = time.perf_counter() if timed else 0.0
        response: web.StreamResponse | None = None
        try:
            try:
                guard(request)
                response = await handler(request)
            except ProxyError as exc:
                response = exc.response()
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = _http_error(exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug must still answer in OpenAI's shape (SDKs then raise InternalServerError cleanly).
                log.exception("unhandled error on %s %s", request.method, clip(path))
                response = _bug()
            return response
        finally:
            if timed:
                observe(request, path, response, time.perf_counter() - started)

    return front


def _http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx/5xx (404 route, 405 method, 413 body) in OpenAI's shape."""
    type_ = "invalid_request_error" if exc.status < 500 else "server_error"
    return web.Response(
        status=exc.status, body=error_body(exc.reason, type_), content_type="application/json"
    )


def _bug() -> web.Response:
    return web.Response(
        status=500,
        body=error_body("The proxy failed to handle the request.", "server_error", "proxy_error"),
        content_type="application/json",
    )


def check_headers(headers: Mapping[str, str]) -> None:
    """400 ``invalid_header`` for a value the proxy could not use or forward; the value is never shown.

    aiohttp decodes header bytes as UTF-8 with ``surrogateescape``: invalid UTF-8 would fail only
    when forwarded (a 500 with the value in a traceback). Credentials must be printable ASCII.
    """
    for name, value in headers.items():
        if value.isascii():
            if name.lower() == "authorization" and not value.isprintable():
                raise invalid_header()
            continue
        if name.lower() == "authorization":
            raise invalid_header()
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid_header() from None
