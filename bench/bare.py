"""The bare references: the least an aiohttp + uvloop server can do to give a client the same answer.

``python -m bench.bare --port P --redis-url URL --redis-prefix X`` runs in its own process, like the
proxy, and is loaded by the same generator with the same request, so ``proxy / reference`` in one
run says how close the proxy is to the limit of its own stack:

- ``POST /bytes/{name}``: ``bare-bytes``, ready bytes (the proxy's hit body for that scenario);
- ``POST /read/{name}``: ``bare-read``, reads the whole request body first (a vision-edit
  request carries a ~2 MB image), then answers the ready bytes;
- ``POST /redis/{name}``: ``raw-redis-get``, one redis-py ``GET`` of a key holding the whole body;
- ``POST /forward/{path}``: ``bare-forward``, the request sent on to the upstream with aiohttp's
  client (same body, ``Authorization`` and ``Content-Type``) and its answer returned: the least an
  aiohttp proxy adds to a miss (no parsing, no key, no store, no metrics).

The bench uploads each body with ``PUT /_body/{name}`` (and SETs the Redis key itself) right before
measuring, copied from the proxy's own answer, so the bytes on the wire are the same. Every answer
carries the proxy hit's header set: ``Content-Type`` plus ``X-Cache``, ``Age`` and a 64-hex
``X-Cache-Key``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Sequence

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bench.procs import serve_child

BODIES = web.AppKey("bodies", dict[str, bytes])
REDIS = web.AppKey("redis", aioredis.Redis)
REDIS_PREFIX = web.AppKey("redis_prefix", str)
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
_FORWARDED = ("Authorization", "Content-Type")
# The headers a proxy hit carries besides Content-Type (same names, same value lengths).
HIT_HEADERS = {"X-Cache": "HIT", "Age": "0", "X-Cache-Key": "0" * 64}
_MAX_REQUEST_BYTES = 128 * 1024 * 1024  # the proxy's default limit is 64 MiB; never the bottleneck
# The proxy's own Redis pool reads in 1 MiB steps (proxy/storage/redis.py); the reference must not be
# handicapped by redis-py's 64 KiB default when it moves the same 2 MB.
_SOCKET_READ_SIZE = 1 << 20


def _answer(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json", headers=HIT_HEADERS)


def _missing(name: str) -> web.Response:
    return web.Response(status=404, text=f"no body uploaded for {name!r}")


async def ready_bytes(request: web.Request) -> web.Response:
    """``bare-bytes``: the uploaded body, nothing else."""
    body = request.app[BODIES].get(request.match_info["name"])
    return _missing(request.match_info["name"]) if body is None else _answer(body)


async def read_then_bytes(request: web.Request) -> web.Response:
    """``bare-read``: the whole request body is read (as any handler that looks at it must)."""
    await request.read()
    return await ready_bytes(request)


async def redis_get(request: web.Request) -> web.Response:
    """``raw-redis-get``: the body fetched with one ``GET`` on every request."""
    name = request.match_info["name"]
    body = await request.app[REDIS].get(request.app[REDIS_PREFIX] + name)
    return _missing(name) if body is None else _answer(body)


async def forward(request: web.Request) -> web.Response:
    """``bare-forward``: one upstream call with the client's body and credentials, answered as is."""
    body = await request.read()
    headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
    url = f"{request.app[UPSTREAM]}/{request.match_info['path']}"
    async with request.app[SESSION].post(url, data=body, headers=headers) as upstream:
        answer = await upstream.read()
        return web.Response(status=upstream.status, body=answer, content_type=upstream.content_type)


async def upload(request: web.Request) -> web.Response:
    """Control route: the ready bytes for ``name``."""
    request.app[BODIES][request.match_info["name"]] = await request.read()
    return web.Response(text="ok")


async def ready(request: web.Request) -> web.Response:
    """Answers once listening (the bench polls it)."""
    return web.Response(text="ok")


def create_app(redis_url: str, redis_prefix: str, upstream_url: str = "") -> web.Application:
    """The reference server; the Redis client and the upstream session open with the app and
    close with it."""
    app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
    app[BODIES] = {}
    app[REDIS_PREFIX] = redis_prefix
    app[UPSTREAM] = upstream_url.rstrip("/")

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = aioredis.Redis.from_url(redis_url, socket_read_size=_SOCKET_READ_SIZE)
        # The proxy's upstream session is a plain ClientSession too (no cookie jar, keep-alive).
        app[SESSION] = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        yield
        await app[SESSION].close()
        await app[REDIS].aclose()

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post("/bytes/{name}", ready_bytes)
    app.router.add_post("/read/{name}", read_then_bytes)
    app.router.add_post("/redis/{name}", redis_get)
    app.router.add_post("/forward/{path:.+}", forward)
    app.router.add_put("/_body/{name}", upload)
    app.router.add_get("/_ready", ready)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-prefix", default="lcpbench:bare:")
    parser.add_argument("--upstream-url", default="", help="base URL ``/forward/{path}`` sends to")
    args = parser.parse_args(argv)
    serve_child(create_app(args.redis_url, args.redis_prefix, args.upstream_url), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
