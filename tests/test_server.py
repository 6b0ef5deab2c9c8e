"""The proxy's HTTP server (``proxy.web.server``): no header value ever echoed, a header read timeout,
draining on SIGTERM, and the aiohttp internals it relies on."""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_app import _build_middlewares
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_runner import BaseRunner

from proxy.web.server import GuardedRequestHandler, GuardedServer, ProxyRunner, exact_routes
from tests.e2e_helpers import chat_body
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, free_port, proxy_settings
from tests.proxy_process import ProxyProcess
from tests.wire import WireConnection, exchange, request_bytes


@pytest.fixture
def secret() -> str:
    """A bearer secret no other test or log line contains."""
    return f"sk-secret-{uuid.uuid4().hex}"


@pytest.fixture
def process(fake_upstream: FakeUpstream) -> Iterator[ProxyProcess]:
    """``python -m proxy serve`` (in-memory store) at debug log level in front of the fake upstream."""
    env = {"PROXY_UPSTREAM_URL": fake_upstream.url, "PROXY_LOG_LEVEL": "debug", "PROXY_SHUTDOWN_GRACE": "20"}
    proc = ProxyProcess(env, clean_env=True)
    try:
        yield proc.start()
    finally:
        proc.stop()
        proc.close()


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("Authorization: Bearer {secret}\x01tail", id="control-byte"),
        pytest.param("Authorization: Bearer {secret}" + "A" * 9000, id="over-field-limit"),
        pytest.param("X-" + "N" * 9000 + ": {secret}", id="name-over-field-limit"),
        pytest.param("Authorization: Bearer {secret}\rtail", id="bare-cr"),
    ],
)
async def test_malformed_header_is_a_generic_400_without_the_value(
    process: ProxyProcess, secret: str, template: str
) -> None:
    """aiohttp's parser refuses the header; the answer is an OpenAI 400 and the secret is in
    neither the body nor anything the process logged (even at debug level)."""
    line = template.replace("{secret}", secret)
    raw = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + line.encode("latin-1") + b"\r\n\r\n"
    reply = await exchange(process.port, raw)
    assert reply.status == 400
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert reply.error_code() in {"invalid_header", "bad_request"}
    assert secret.encode() not in reply.body
    await asyncio.sleep(0.2)  # let the process flush what it logs about it
    assert secret not in process.output()
    assert "Traceback" not in process.output()


async def test_undecodable_authorization_is_400_without_the_value(
    process: ProxyProcess, fake_upstream: FakeUpstream, secret: str
) -> None:
    """A bearer with a byte that is not UTF-8 passes aiohttp's parser; the proxy refuses it (no 500)."""
    raw = request_bytes("GET", "/v1/models", {"Authorization": f"Bearer {secret}\xff"})
    reply = await exchange(process.port, raw)
    assert (reply.status, reply.error_code()) == (400, "invalid_header")
    assert secret.encode() not in reply.body
    await asyncio.sleep(0.2)
    assert secret not in process.output()
    assert fake_upstream.state.calls["models"] == 0


@pytest.fixture
async def quick_timeout_proxy(fake_upstream: FakeUpstream) -> AsyncIterator[ProxyServer]:
    """The proxy with a 1 s header read timeout (in-memory store)."""
    async with ProxyServer(proxy_settings(fake_upstream.url, None, "unused", header_timeout=1.0)) as server:
        yield server


async def test_incomplete_request_head_is_closed_after_the_header_timeout(
    quick_timeout_proxy: ProxyServer,
) -> None:
    """A client that sends part of a head and stalls (slowloris), or nothing at all, is disconnected."""
    async with (
        WireConnection(quick_timeout_proxy.port) as partial,
        WireConnection(quick_timeout_proxy.port) as silent,
    ):
        await partial.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        started = time.monotonic()
        assert await partial.closed(timeout=10)
        assert await silent.closed(timeout=10)
        assert 0.5 < time.monotonic() - started < 10


async def test_keep_alive_idle_time_is_not_the_header_timeout(quick_timeout_proxy: ProxyServer) -> None:
    """Between requests a kept-alive connection may idle longer than the header timeout; a head
    sent slowly but completed in time is served."""
    async with WireConnection(quick_timeout_proxy.port) as connection:
        await connection.send(request_bytes("GET", "/healthz"))
        assert (await connection.response()).status == 200
        await asyncio.sleep(2.5)  # idle, well past the 1 s header timeout
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            await connection.send(piece)
            await asyncio.sleep(0.2)
        assert (await connection.response()).status == 200


async def test_sigterm_drains_readyz_503_on_open_connection_while_a_request_finishes(
    process: ProxyProcess, fake_upstream: FakeUpstream
) -> None:
    """After SIGTERM an open keep-alive connection still gets answers, /readyz is 503 "draining",
    the slow request in flight completes with 200, and the process then exits 0."""
    fake_upstream.state.latency_s = 3.0
    async with WireConnection(process.port) as idle:
        await idle.send(request_bytes("GET", "/readyz"))
        before = await idle.response()
        assert (before.status, before.json()["status"]) == (200, "ok")
        async with aiohttp.ClientSession() as session:
            slow = asyncio.create_task(
                session.post(
                    f"{process.url}/chat/completions",
                    json=chat_body("take your time"),
                    headers={"Authorization": "Bearer sk-any"},
                )
            )
            deadline = time.monotonic() + 20
            while fake_upstream.state.in_flight == 0:
                assert time.monotonic() < deadline, "the slow request never reached the upstream"
                await asyncio.sleep(0.02)
            assert process.proc is not None
            process.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            await idle.send(request_bytes("GET", "/readyz"))
            during = await idle.response()
            assert (during.status, during.json()["status"]) == (503, "draining")
            assert during.headers.get("connection") == "close"
            response = await slow
            assert response.status == 200
            assert (await response.json())["choices"][0]["finish_reason"] == "stop"
    assert process.proc.wait(timeout=30) == 0


async def test_readyz_stays_200_while_degraded_and_says_why(fake_upstream: FakeUpstream) -> None:
    """With the store unreachable /readyz is 200 with what is degraded, and the gauge is 1."""
    settings = proxy_settings(fake_upstream.url, "redis://127.0.0.1:1/0", "unused", store_timeout=0.1)
    async with ProxyServer(settings) as proxy:
        reply = await exchange(proxy.port, request_bytes("GET", "/readyz", {"Connection": "close"}))
        assert (reply.status, reply.json()) == (
            200,
            {"status": "degraded", "degraded": {"store": "unreachable"}},
        )
        metrics = await exchange(proxy.port, request_bytes("GET", "/metrics", {"Connection": "close"}))
        assert b'llm_proxy_degraded{component="store"} 1.0' in metrics.body


def test_aiohttp_internals_the_server_relies_on() -> None:
    """Pins every aiohttp internal ``proxy.web.server`` overrides or reads (aiohttp >=3.10,<4)."""
    params = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    assert list(inspect.signature(RequestHandler.finish_response).parameters) == [
        "self",
        "request",
        "resp",
        "start_time",
    ]
    for name in ("data_received", "connection_made", "connection_lost", "close", "force_close"):
        assert callable(getattr(RequestHandler, name)), name
    for slot in ("_request_count", "_messages", "_request_in_progress", "_loop"):
        assert any(slot in getattr(cls, "__slots__", ()) for cls in RequestHandler.__mro__), slot
    assert "_shutdown_timeout" in BaseRunner.__slots__
    server = web.Server(lambda request: web.Response(), loop=asyncio.new_event_loop(), custom_kwarg=1)
    try:
        assert server._kwargs == {"custom_kwarg": 1}
        assert server._loop is not None
        assert (server.request_handler, server.request_factory, server.handler_cancellation) != (None,) * 3
    finally:
        server._loop.close()
    assert issubclass(GuardedRequestHandler, RequestHandler)
    # The parse error reaches handle_error through _make_error_handler (web_protocol.py).
    assert callable(RequestHandler._make_error_handler)
    # upstream.relay.HeldResponse: headers wait for the body (web.Response's own behaviour).
    assert web.StreamResponse._send_headers_immediately is True
    assert web.Response._send_headers_immediately is False


@pytest.mark.parametrize("name", ["PROXY_ADMIN_TOKEN", "PROXY_METRICS_TOKEN"])
def test_short_tokens_refuse_to_start(name: str) -> None:
    """An admin or metrics token under 32 characters stops the process at start, saying why."""
    proc = ProxyProcess({name: "x" * 31}, clean_env=True).launch()
    try:
        assert proc.proc is not None
        assert proc.proc.wait(timeout=30) != 0
        assert f"{name} must be at least 32 characters" in proc.output()
        assert "x" * 31 not in proc.output()
    finally:
        proc.close()


def _routing_app() -> web.Application:
    """A plain route, a dynamic one and a sub-app, behind a middleware that marks its answers."""

    @web.middleware
    async def mark(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers["X-Middleware"] = "ran"
        return response

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "-"
        same_app = request.app is app or request.app is sub
        return web.Response(text=f"{route} {request.query_string} {same_app}")

    app = web.Application(middlewares=[mark])
    app.router.add_post("/plain", answer)
    app.router.add_post("/items/{name}", answer)
    sub = web.Application()
    sub.router.add_post("/inner", answer)
    app.add_subapp("/sub", sub)
    return app


async def test_exact_routes_skip_only_the_router_never_the_middlewares() -> None:
    """``GuardedServer`` serves the app's plain routes without the router (``exact_routes``), and
    what the handler sees and the middleware does is what the router's way gives: the route, the
    app, the query; anything not exactly a plain route (query, encoding, path variables, sub-app,
    ``Expect: 100-continue``) takes the router's way."""
    app = _routing_app()
    runner = ProxyRunner(app, header_timeout=5.0, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        server = runner.server
        assert isinstance(server, GuardedServer)
        assert set(server.exact) == {("POST", "/plain")}
        async with aiohttp.ClientSession() as session:
            for path, expect, text in [
                ("/plain", None, "/plain  True"),
                ("/plain?q=1", None, "/plain q=1 True"),
                ("/plain", "100-continue", "/plain  True"),
                ("/items/a", None, "/items/{name}  True"),
                ("/sub/inner", None, "/sub/inner  True"),
            ]:
                headers = {"Expect": expect} if expect else {}
                url = f"http://127.0.0.1:{port}{path}"
                async with session.post(url, data=b"x", headers=headers) as reply:
                    assert (reply.status, await reply.text()) == (200, text), path
                    assert reply.headers["X-Middleware"] == "ran", path
            async with session.post(f"http://127.0.0.1:{port}/nowhere", data=b"x") as reply:
                assert reply.status == 404
    finally:
        await runner.cleanup()


def test_aiohttp_internals_the_exact_routes_rely_on() -> None:
    """``web.server.exact_routes`` rebuilds what ``Application._handle`` does with these."""
    app = _routing_app()
    app.freeze()
    assert app._run_middlewares is True
    assert app._has_legacy_middlewares is False
    assert "_match_info" in web.Request.ATTRS
    table = exact_routes(app)
    match_info, handler = table[("POST", "/plain")]
    assert match_info.apps == (app,)
    assert callable(handler)
    assert list(inspect.signature(_build_middlewares).parameters) == ["handler", "apps"]
    assert "self._router.resolve(request)" in inspect.getsource(web.Application._handle)
