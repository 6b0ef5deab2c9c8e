"""The HTTP server the proxy runs on: aiohttp's, with three things changed.

- A request aiohttp cannot parse is answered with a generic OpenAI-style 400. aiohttp's own
  answer (``RequestHandler.handle_error``) echoes the offending line, which for an oversize or
  malformed ``Authorization`` header is the caller's secret, and logs it with a traceback.
- A connection that has not sent a complete request head within ``PROXY_HEADER_TIMEOUT`` is
  closed (slowloris); the keep-alive idle time between requests stays aiohttp's.
- Requests for an exact route of the app (``POST /v1/chat/completions``, not a sub-app's, no
  query, no percent-encoding) skip the router: ``exact_routes`` resolves them once, at start.
- Shutdown drains: on SIGTERM ``/readyz`` turns 503, the listener closes, and connections that
  are already open keep being served (with ``Connection: close``) until the requests in flight
  finish or ``PROXY_SHUTDOWN_GRACE`` runs out; only then does aiohttp's cleanup close them.

It relies on aiohttp internals (``web_protocol.RequestHandler``, ``web.Server``): aiohttp is
pinned ``>=3.10,<4`` and ``tests/test_server.py`` pins every attribute used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import InvalidHeader, LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_app import _build_middlewares
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from proxy.errors import ProxyError
from proxy.state import HEALTH

log = logging.getLogger(__name__)

# run_app's default; AppRunner alone would keep idle connections for an hour.
KEEPALIVE_TIMEOUT_S = 75.0

_Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]
# (method, raw path) -> the match info the router would give (frozen, shared) and the route's
# handler wrapped in the app's middlewares.
ExactRoutes = dict[tuple[str, str], tuple[UrlMappingMatchInfo, Handler]]


def exact_routes(app: web.Application) -> ExactRoutes:
    """The app's own plain routes, resolved once: what ``Application._handle`` does per request.

    Per request, aiohttp's ``Application._handle`` resolves the path through the router, builds
    and freezes a match info, and looks up the middleware chain: about 6 % of a text hit
    (``bench/profiles/text_hit.txt``) for a handful of fixed paths. A match info of a plain route
    holds no request data (no path variables); sharing one is what aiohttp's own
    ``_fix_request_current_app`` already assumes of the app it sets (always this app here).
    Sub-apps (admin, console) and dynamic routes are left to the router.
    """
    table: ExactRoutes = {}
    if app._has_legacy_middlewares:  # old-style middlewares are built per request by aiohttp
        return table
    for resource in app.router.resources():  # a sub-app is one resource here (its routes are its own)
        if not isinstance(resource, web.PlainResource):
            continue
        for route in resource:
            if route.method == hdrs.METH_ANY:
                continue
            match_info = UrlMappingMatchInfo({}, route)
            match_info.add_app(app)
            match_info.freeze()
            handler = _build_middlewares(route.handler, (app,)) if app._run_middlewares else route.handler
            table[(route.method, resource.canonical)] = (match_info, handler)
    return table


def close_after_response(request: web.BaseRequest) -> None:
    """Answer, then close the connection without reading the rest of the request body.

    A flag of the connection, not of the request: a connection handles one request at a time,
    and ``finish_response`` reads an attribute on every request where a request key costs a
    ``KeyError`` (1 % of a text hit). Without ``GuardedServer`` nothing closes early (aiohttp's
    own server reads the rest of the body, as always).
    """
    protocol = request.protocol
    if isinstance(protocol, GuardedRequestHandler):
        protocol.close_after = True


def parse_error(exc: BaseException | None) -> ProxyError:
    """The answer to a request aiohttp could not parse: what kind of problem, never the bytes."""
    if isinstance(exc, InvalidHeader | LineTooLong):
        message, code = "A request header is malformed or over the size limit.", "invalid_header"
    else:
        message, code = "The request is not valid HTTP/1.1.", "bad_request"
    return ProxyError(400, message, code=code)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with a generic parse-error answer and a header timeout."""

    __slots__ = ("_head_timer", "_header_timeout", "_last_payload", "close_after")

    def __init__(self, manager: GuardedServer, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._last_payload: Any = None  # body stream of the last request head parsed
        self.close_after = False  # the request being answered asked for ``close_after_response``

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a complete head is closed too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parsed_before = self._request_count
        super().data_received(data)
        if self._request_count != parsed_before:  # a head is complete (or failed to parse)
            self._disarm_head_timer()
            self._last_payload = self._messages[-1][1] if self._messages else None
        elif data and self._head_timer is None and self._between_requests():
            # Bytes after the previous request's body that do not complete a head yet: its clock
            # starts. Checked after parsing, so the usual head that arrives whole arms no timer.
            self._arm_head_timer()

    def _between_requests(self) -> bool:
        return self._last_payload is None or self._last_payload.is_eof()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        log.debug("closing a connection that sent no complete request head in %.1f s", self._header_timeout)
        if self._request_in_progress:
            self.close()  # a pipelined head stalls behind a running request: finish that one first
        else:
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's last-resort answer, in OpenAI's shape and without the request's bytes.

        ``message`` and ``str(exc)`` quote the offending request line or header value, so
        neither is logged nor sent: only the exception's type.
        """
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started; cannot send an error")
        if status == 400:
            log.debug("refused an unparsable request: %s", type(exc).__name__)
            error = parse_error(exc)
        elif status == 504:
            error = ProxyError(504, "The request timed out.", type="server_error", code="timeout")
        else:
            # Our handlers render their own errors; this is a bug outside them, keep its traceback.
            log.error("unhandled error outside the handlers", exc_info=exc)
            error = ProxyError(500, "The proxy failed to handle the request.", type="server_error")
        response = error.response()
        response.force_close()
        return response

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Send the answer; then close at once if the handler refused to read the body."""
        close, self.close_after = self.close_after, False
        if close and not resp.prepared:
            resp.force_close()  # says "Connection: close"
        result = await super().finish_response(request, resp, start_time)
        if close and not request.content.is_eof():
            self.force_close()  # no lingering read of what is left of the body
        return result


class GuardedServer(web.Server):
    """Creates ``GuardedRequestHandler`` connections and counts the requests being handled."""

    def __init__(
        self, handler: _Handler, *, header_timeout: float, exact: ExactRoutes | None = None, **kwargs: Any
    ) -> None:
        self.header_timeout = header_timeout
        self.exact = exact or {}
        self.active = 0
        self.draining = False
        # Set only while ``wait_idle`` waits: an Event cleared and set around every request was
        # 1 % of a text hit, for a wait that happens once, at shutdown.
        self._idle: asyncio.Future[None] | None = None
        self._inner = handler
        super().__init__(self._counted, **kwargs)

    async def _counted(self, request: BaseRequest) -> web.StreamResponse:
        self.active += 1
        try:
            # An exact route by its raw target (so a query or any encoding goes the router's way),
            # unless the client expects a 100-continue (the router's match info answers that).
            exact = self.exact.get((request.method, request.raw_path))
            if exact is None or hdrs.EXPECT in request.headers or not isinstance(request, web.Request):
                response = await self._inner(request)
            else:
                match_info, handler = exact
                request._match_info = match_info
                response = await handler(request)
        finally:
            self.active -= 1
            if self.active == 0 and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)
        if self.draining and not response.prepared:
            response.force_close()  # clients move to another replica
        return response

    async def wait_idle(self) -> None:
        """Until no request is being handled."""
        while self.active:
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )


class ProxyRunner(web.AppRunner):
    """``AppRunner`` serving through ``GuardedServer``; ``stop`` drains before cleaning up.

    Request bodies are never decompressed by the server (``auto_decompress=False``): the proxy
    refuses compressed bodies unread (415), so no byte of a compression bomb is ever inflated.
    """

    def __init__(self, app: web.Application, *, header_timeout: float, shutdown_timeout: float) -> None:
        super().__init__(
            app,
            shutdown_timeout=shutdown_timeout,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        )
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        stock = await super()._make_server()  # runs on_startup and freezes the app
        return GuardedServer(
            stock.request_handler,
            header_timeout=self._header_timeout,
            request_factory=stock.request_factory,
            handler_cancellation=stock.handler_cancellation,
            exact=exact_routes(self.app),
            loop=stock._loop,
            **stock._kwargs,
        )

    async def stop(self, grace: float) -> None:
        """Drain (readiness 503, no new connections, in-flight requests finish), then clean up.

        The whole stop takes at most ``grace`` for requests in flight; background stores then
        get their own bound (the cache's pending writes, then the flights' announcements, on cleanup).
        """
        server = self.server
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if isinstance(server, GuardedServer):
            server.draining = True
            health = self.app.get(HEALTH)
            if health is not None:
                health.start_draining()
            for site in list(self.sites):
                await site.stop()
            try:
                async with asyncio.timeout(grace):
                    await server.wait_idle()
            except TimeoutError:
                log.warning("shutdown: %d request(s) still running after %.1f s", server.active, grace)
            # aiohttp's own wait for handlers gets only what is left of the grace period.
            self._shutdown_timeout = max(deadline - loop.time(), 0.0)
        await self.cleanup()


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    header_timeout: float,
    grace: float,
    reuse_port: bool = False,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then drain and stop (``python -m proxy serve``)."""
    runner = ProxyRunner(app, header_timeout=header_timeout, shutdown_timeout=grace)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        announce(f"======== Running on {site.name} ========\n(Press CTRL+C to quit)")
        await _until_signalled()
    finally:
        await runner.stop(grace)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
