"""Hostile request bodies and headers: compression bombs, chunked uploads over the limit,
pathological JSON, oversize model names, hop-by-hop headers. Each checks what the upstream got."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxy.config import Secret
from tests.e2e_helpers import TEXT_MODEL, chat_body
from tests.managed_helpers import ADMIN_TOKEN
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.proxy_process import ProxyProcess
from tests.raw_upstream import RawUpstream, Received, http_response, json_response
from tests.wire import exchange, request_bytes

BEARER = "sk-caller-own-upstream-key"
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def completion(_request: Received) -> bytes:
    """A complete chat completion, as the upstream answers a miss."""
    return json_response(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": TEXT_MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    """A recording upstream answering every request with a chat completion."""
    async with RawUpstream(completion) as server:
        yield server


@pytest.fixture
async def proxy(upstream: RawUpstream) -> AsyncIterator[ProxyServer]:
    """Pass-through proxy, in-memory store, 1000-byte body limit, admin API on."""
    settings = proxy_settings(
        upstream.url, None, "unused", max_body_bytes=1000, auth="passthrough", admin_token=Secret(ADMIN_TOKEN)
    )
    async with ProxyServer(settings) as server:
        yield server


# --- Content-Encoding --------------------------------------------------------------------


async def test_gzip_bomb_is_415_unread_memory_bounded_and_healthz_fast() -> None:
    """Eight parallel 60 KB gzip bodies that inflate to 60 MB each: 415 unread, the proxy's RSS
    barely moves, /healthz stays fast, the upstream receives nothing."""
    inflated = orjson.dumps(chat_body("A" * 60_000_000))
    bomb = gzip.compress(inflated, 9)
    assert len(bomb) < 100_000
    async with RawUpstream(completion) as upstream:
        proc = ProxyProcess({"PROXY_UPSTREAM_URL": upstream.url, "PROXY_AUTH": "passthrough"}, clean_env=True)
        try:
            proc.start()
            assert proc.proc is not None
            pid = proc.proc.pid
            before = peak = rss_bytes(pid)
            headers = {"Authorization": f"Bearer {BEARER}", "Content-Encoding": "gzip"}
            health_latencies: list[float] = []
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

                async def send() -> tuple[int, bytes]:
                    async with session.post(
                        f"{proc.url}/chat/completions", data=bomb, headers=headers
                    ) as response:
                        return response.status, await response.read()

                async def health() -> None:
                    started = time.monotonic()
                    async with session.get(f"{proc.base}/healthz") as response:
                        assert response.status == 200
                    health_latencies.append(time.monotonic() - started)

                bombs = asyncio.gather(*(send() for _ in range(8)))
                while not bombs.done():
                    peak = max(peak, rss_bytes(pid))
                    await health()
                    await asyncio.sleep(0.01)
                results = await bombs
                peak = max(peak, rss_bytes(pid))
        finally:
            proc.stop()
            output = proc.output()
            proc.close()
    slowest = max(health_latencies)
    print(f"RSS before {before / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB; slowest /healthz {slowest:.3f} s")
    for status, body in results:
        assert status == 415, body[:200]
        assert orjson.loads(body)["error"]["code"] == "unsupported_content_encoding"
    assert peak - before < 40 * MIB, (before, peak)
    assert max(health_latencies) < 1.0
    assert upstream.received == []
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("method", "path", "bearer"),
    [
        ("POST", "/v1/chat/completions", BEARER),
        ("POST", "/v1/embeddings", BEARER),
        ("POST", "/admin/keys", ADMIN_TOKEN),
        ("GET", "/metrics", None),
        ("GET", "/v1/models", BEARER),
    ],
)
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "identity, gzip"])
async def test_compressed_request_is_415_on_every_route(
    proxy: ProxyServer, upstream: RawUpstream, method: str, path: str, bearer: str | None, coding: str
) -> None:
    """Any Content-Encoding but identity is refused 415 before the body is read; nothing forwarded."""
    body = gzip.compress(orjson.dumps(chat_body("hi")))
    headers = {"Content-Encoding": coding, "Content-Type": "application/json"}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    reply = await exchange(proxy.port, request_bytes(method, path, headers, body))
    assert (reply.status, reply.error_code()) == (415, "unsupported_content_encoding")
    assert reply.headers.get("connection") == "close"
    assert upstream.received == []


async def test_identity_encoding_is_served(proxy: ProxyServer, upstream: RawUpstream) -> None:
    """``Content-Encoding: identity`` is no encoding at all: forwarded as usual."""
    body = orjson.dumps(chat_body("hi"))
    headers = {"Content-Encoding": "identity", "Authorization": f"Bearer {BEARER}", "Connection": "close"}
    reply = await exchange(proxy.port, request_bytes("POST", "/v1/chat/completions", headers, body))
    assert reply.status == 200
    assert len(upstream.complete) == 1


# --- chunked bodies over the limit -------------------------------------------------------


async def _chunked(total: int, piece: int = 200) -> AsyncIterator[bytes]:
    for start in range(0, total, piece):
        yield b"x" * min(piece, total - start)
        await asyncio.sleep(0)


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/files", "/v1/chat/completions"])
async def test_chunked_body_over_the_limit_is_413_and_never_completes_upstream(
    proxy: ProxyServer, upstream: RawUpstream, path: str
) -> None:
    """A chunked upload (no Content-Length) over PROXY_MAX_BODY_BYTES is 413 on every route; the
    upstream never receives a complete request (at most an aborted, unterminated one)."""
    headers = {"Authorization": f"Bearer {BEARER}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{proxy.url}{path.removeprefix('/v1')}", data=_chunked(5000), headers=headers
        ) as response,
    ):
        body = await response.read()
        assert response.status == 413, body
        assert orjson.loads(body)["error"]["code"] == "request_too_large"
    await asyncio.sleep(0.2)  # an aborted upload reaches the upstream's reader late, if at all
    assert upstream.complete == []
    assert all(len(r.body) <= 1000 + 200 for r in upstream.received)


async def test_chunked_body_under_the_limit_is_forwarded_whole(
    proxy: ProxyServer, upstream: RawUpstream
) -> None:
    """The count is only a bound: a chunked body under the limit reaches the upstream intact."""
    headers = {"Authorization": f"Bearer {BEARER}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{proxy.url}/moderations", data=_chunked(900), headers=headers) as response,
    ):
        assert response.status == 200
    assert [len(r.body) for r in upstream.complete] == [900]


# --- bounds on the JSON body ---------------------------------------------------------------


@pytest.fixture
async def roomy_proxy(upstream: RawUpstream) -> AsyncIterator[ProxyServer]:
    """Pass-through proxy with the default body limit."""
    async with ProxyServer(proxy_settings(upstream.url, None, "unused", auth="passthrough")) as server:
        yield server


@pytest.mark.parametrize("depth", [200, 900, 10_000])
async def test_deeply_nested_json_is_400_not_500(
    roomy_proxy: ProxyServer, upstream: RawUpstream, depth: int
) -> None:
    """Arrays nested 200/900/10,000 deep around a float: 400 invalid_request_error, nothing forwarded."""
    nested = b"[" * depth + b"1.5" + b"]" * depth
    body = orjson.dumps(chat_body("hi"))[:-1] + b',"x":' + nested + b"}"
    headers = {"Authorization": f"Bearer {BEARER}", "Connection": "close"}
    reply = await exchange(roomy_proxy.port, request_bytes("POST", "/v1/chat/completions", headers, body))
    assert reply.status == 400, reply.body[:300]
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert upstream.received == []


async def test_nesting_within_the_limit_is_served(roomy_proxy: ProxyServer, upstream: RawUpstream) -> None:
    """A deep but reasonable tool schema (100 levels) is accepted and forwarded."""
    nested = b"[" * 100 + b"1.5" + b"]" * 100
    body = orjson.dumps(chat_body("hi"))[:-1] + b',"x":' + nested + b"}"
    headers = {"Authorization": f"Bearer {BEARER}", "Connection": "close"}
    reply = await exchange(roomy_proxy.port, request_bytes("POST", "/v1/chat/completions", headers, body))
    assert reply.status == 200
    assert len(upstream.complete) == 1


async def test_model_name_over_256_characters_is_400(
    roomy_proxy: ProxyServer, upstream: RawUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """A 257-character (or 5 MB) model is refused before anything uses it; 256 is fine."""
    headers = {"Authorization": f"Bearer {BEARER}", "Connection": "close"}
    for model in ("m" * 257, "z" * 5_000_000):
        body = orjson.dumps(chat_body("hi", model=model))
        reply = await exchange(roomy_proxy.port, request_bytes("POST", "/v1/chat/completions", headers, body))
        assert (reply.status, reply.json()["error"]["param"]) == (400, "model")
        assert model.encode() not in reply.body
    assert upstream.received == []
    assert "z" * 200 not in caplog.text
    ok = orjson.dumps(chat_body("hi", model="m" * 256))
    reply = await exchange(roomy_proxy.port, request_bytes("POST", "/v1/chat/completions", headers, ok))
    assert reply.status == 200
    assert len(upstream.complete) == 1


# --- hop-by-hop headers --------------------------------------------------------------------


def answer_with_hop_headers(request: Received) -> bytes:
    """A completion whose response names a private header in Connection, plus Keep-Alive."""
    hop = {"Connection": "close, X-Upstream-Hop", "X-Upstream-Hop": "1", "Keep-Alive": "timeout=5"}
    body = completion(request).split(b"\r\n\r\n", 1)[1]
    return http_response(200, body, {**hop, "X-Upstream-Kept": "1"})


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/moderations"])
async def test_hop_by_hop_headers_are_stripped_both_ways(path: str) -> None:
    """Headers named in Connection and the fixed RFC 9110 §7.6.1 set never cross the proxy, either way."""
    async with RawUpstream(answer_with_hop_headers) as upstream:
        settings = proxy_settings(upstream.url, None, "unused", auth="passthrough")
        async with ProxyServer(settings) as server:
            headers = {
                "Authorization": f"Bearer {BEARER}",
                "Connection": "keep-alive, X-Hop-Secret, x-other-hop",
                "X-Hop-Secret": "do-not-forward",
                "X-Other-Hop": "nope",
                "Keep-Alive": "timeout=5",
                "Proxy-Connection": "keep-alive",
                "TE": "trailers",
                "Upgrade": "h2c",
                "X-Kept": "yes",
                "Content-Type": "application/json",
            }
            body = orjson.dumps(chat_body("hop"))
            reply = await exchange(server.port, request_bytes("POST", path, headers, body))
    assert reply.status == 200
    sent = dict(upstream.received[0].headers())
    assert sent["x-kept"] == "yes"
    for name in ("x-hop-secret", "x-other-hop", "keep-alive", "proxy-connection", "te", "upgrade"):
        assert name not in sent, name
    assert reply.headers["x-upstream-kept"] == "1"
    assert "x-upstream-hop" not in reply.headers
    assert "keep-alive" not in reply.headers
