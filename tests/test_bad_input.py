"""Bad input and upstream faults: OpenAI-shaped errors, nothing forwarded or cached that shouldn't be."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest

from tests.e2e_helpers import (
    API_KEY,
    SMALL_IMAGE,
    TEXT_MODEL,
    async_client,
    chat_body,
    chat_raw,
    send_raw,
    sse_data,
    user,
)
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, free_port, proxy_settings

GOOD = chat_body("hello")


def assert_openai_error(body: bytes, type_: str) -> dict[str, object]:
    """The body is ``{"error": {"message", "type", "param", "code"}}`` of the given type."""
    error = orjson.loads(body)["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert isinstance(error["message"], str)
    assert error["message"]
    return dict(error)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"text"', id="string"),
        pytest.param(orjson.dumps({"messages": GOOD["messages"]}), id="no-model"),
        pytest.param(orjson.dumps({"model": TEXT_MODEL}), id="no-messages"),
        pytest.param(orjson.dumps({**GOOD, "stream": "yes"}), id="stream-yes"),
        pytest.param(orjson.dumps({**GOOD, "messages": "hello"}), id="messages-string"),
        pytest.param(orjson.dumps({**GOOD, "messages": ["hello"]}), id="messages-of-strings"),
        pytest.param(orjson.dumps({**GOOD, "messages": []}), id="messages-empty"),
        pytest.param(orjson.dumps({**GOOD, "model": 4}), id="model-number"),
        pytest.param(orjson.dumps({**GOOD, "model": None}), id="model-null"),
        pytest.param(orjson.dumps({**GOOD, "temperature": "hot"}), id="temperature-string"),
        pytest.param(orjson.dumps({**GOOD, "max_tokens": True}), id="max-tokens-bool"),
    ],
)
async def test_malformed_body_is_400_and_not_forwarded(
    proxy: ProxyServer, fake_upstream: FakeUpstream, raw: bytes
) -> None:
    """Malformed bodies get 400 invalid_request_error and never reach the upstream."""
    reply = await chat_raw(proxy, raw)
    assert reply.status == 400, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    assert_openai_error(reply.body, "invalid_request_error")
    assert fake_upstream.chat_calls == 0


async def test_sdk_raises_bad_request_for_a_malformed_field(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """The openai SDK maps the proxy's 400 to BadRequestError with the proxy's message."""
    async with async_client(proxy) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model=TEXT_MODEL, messages=user("hi"), extra_body={"stream": "yes"}
            )
    assert "stream" in caught.value.message
    assert fake_upstream.chat_calls == 0


@pytest.fixture
async def small_body_proxy(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> AsyncIterator[ProxyServer]:
    """A proxy refusing bodies over 1000 bytes."""
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, max_body_bytes=1000)
    async with ProxyServer(settings) as server:
        yield server


async def test_oversize_body_is_413_and_not_forwarded(
    small_body_proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """A body over max_body_bytes (with Content-Length) gets 413 and never reaches the upstream."""
    reply = await chat_raw(small_body_proxy, chat_body("x" * 2000))
    assert reply.status == 413
    assert_openai_error(reply.body, "invalid_request_error")
    assert fake_upstream.chat_calls == 0
    ok = await chat_raw(small_body_proxy, chat_body("small"))
    assert ok.status == 200
    assert fake_upstream.chat_calls == 1


async def test_oversize_chunked_body_is_413_and_not_forwarded(
    small_body_proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """A chunked body (no Content-Length) that grows over max_body_bytes also gets 413."""

    async def pieces() -> AsyncIterator[bytes]:
        data = orjson.dumps(chat_body("y" * 3000))
        for start in range(0, len(data), 500):
            yield data[start : start + 500]

    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{small_body_proxy.url}/chat/completions", data=pieces(), headers=headers) as response,
    ):
        assert response.status == 413
        assert_openai_error(await response.read(), "invalid_request_error")
    assert fake_upstream.chat_calls == 0


async def test_upstream_unreachable_is_502(redis_url: str, key_prefix: str) -> None:
    """An upstream nobody listens on gives 502 with an OpenAI error body (server_error)."""
    settings = proxy_settings(f"http://127.0.0.1:{free_port()}/v1", redis_url, key_prefix)
    async with ProxyServer(settings) as server:
        reply = await chat_raw(server, GOOD)
        assert reply.status == 502
        assert_openai_error(reply.body, "server_error")
        async with async_client(server) as client:
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model=TEXT_MODEL, messages=user("hello"))


async def test_upstream_timeout_is_504(fake_upstream: FakeUpstream, redis_url: str, key_prefix: str) -> None:
    """An upstream that never answers gives 504 after upstream_timeout, with an OpenAI error body."""
    fake_upstream.state.hang = True
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, upstream_timeout=0.5)
    async with ProxyServer(settings) as server:
        started = time.monotonic()
        reply = await chat_raw(server, GOOD)
        elapsed = time.monotonic() - started
    assert reply.status == 504
    assert_openai_error(reply.body, "server_error")
    assert elapsed < 5


@pytest.mark.parametrize(
    ("status", "type_", "exception"),
    [
        (429, "rate_limit_error", openai.RateLimitError),
        (500, "server_error", openai.InternalServerError),
        (404, "invalid_request_error", openai.NotFoundError),
    ],
)
async def test_upstream_error_is_passed_through_and_not_cached(
    proxy: ProxyServer,
    fake_upstream: FakeUpstream,
    status: int,
    type_: str,
    exception: type[openai.APIStatusError],
) -> None:
    """Upstream 4xx/5xx reach the client with status and body intact and are never cached."""
    payload = {"error": {"message": f"upstream says {status}", "type": type_, "param": None, "code": "x"}}
    fake_upstream.state.fail_next.append((status, payload))
    reply = await chat_raw(proxy, GOOD)
    assert reply.status == status
    assert reply.json() == payload
    fake_upstream.state.fail_next.append((status, payload))
    async with async_client(proxy) as client:
        with pytest.raises(exception) as caught:
            await client.chat.completions.create(model=TEXT_MODEL, messages=GOOD["messages"])
        assert caught.value.status_code == status
        assert caught.value.body == payload["error"]
        assert fake_upstream.chat_calls == 2
        # Not cached: the next identical request goes upstream again, succeeds, and only then hits.
        again = await client.chat.completions.with_raw_response.create(
            model=TEXT_MODEL, messages=GOOD["messages"]
        )
        assert again.headers["X-Cache"] == "MISS"
        assert fake_upstream.chat_calls == 3
        last = await client.chat.completions.with_raw_response.create(
            model=TEXT_MODEL, messages=GOOD["messages"]
        )
        assert last.headers["X-Cache"] == "HIT"
        assert fake_upstream.chat_calls == 3


@pytest.mark.parametrize("abort", [True, False], ids=["connection-dropped", "ended-without-done"])
async def test_cut_stream_ends_with_error_event_and_is_not_cached(
    proxy: ProxyServer, fake_upstream: FakeUpstream, abort: bool
) -> None:
    """A stream cut mid-way ends with an error event (no [DONE]) and nothing is cached."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    fake_upstream.state.cut_stream_after_chunks = 3
    fake_upstream.state.cut_stream_abort = abort
    body = chat_body("a very long story about a dragon and a knight", stream=True)
    reply = await chat_raw(proxy, body)
    assert reply.status == 200
    events = sse_data(reply.body)
    assert b"[DONE]" not in events
    last = orjson.loads(events[-1])
    assert last["error"]["type"] == "server_error"
    assert len(events) == 4  # the three chunks that arrived, then the error
    async with async_client(proxy) as client:
        with pytest.raises(openai.APIError):
            async for _ in await client.chat.completions.create(
                model=TEXT_MODEL, messages=body["messages"], stream=True
            ):
                pass
    assert fake_upstream.chat_calls == 2
    fake_upstream.state.cut_stream_after_chunks = None
    whole = await chat_raw(proxy, body)
    assert whole.headers["X-Cache"] == "MISS"
    assert sse_data(whole.body)[-1] == b"[DONE]"
    assert fake_upstream.chat_calls == 3


async def test_models_route_is_forwarded_intact_then_cached_briefly(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """GET /v1/models reaches the upstream once with its answer intact; the next one (within
    PROXY_MODELS_TTL) is the same answer from the cache (tests/test_models_cache.py has the rest)."""
    for expected, cache in ((1, "MISS"), (1, "HIT")):
        reply = await send_raw(f"{proxy.url}/models", None, method="GET")
        assert reply.status == 200
        assert reply.json()["object"] == "list"
        assert reply.headers["X-Cache"] == cache
        assert fake_upstream.state.calls["models"] == expected
    async with async_client(proxy) as client:
        models = await client.models.list()
    assert TEXT_MODEL in [model.id for model in models.data]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "GET"])
async def test_other_routes_forward_method_query_and_body(
    proxy: ProxyServer, fake_upstream: FakeUpstream, method: str
) -> None:
    """Other /v1 routes reach the upstream with method, path, query, body and bearer; never cached."""
    body = orjson.dumps({"input": "some text", "model": "omni-moderation-latest"})
    for expected_calls in (1, 2):
        reply = await send_raw(f"{proxy.url}/moderations?x=1&y=two", body, method=method)
        assert reply.status == 200
        echo = reply.json()
        assert echo["method"] == method
        assert echo["path"] == "/v1/moderations"
        assert echo["query"] == "x=1&y=two"
        assert echo["body_len"] == len(body)
        assert echo["headers"]["Authorization"] == f"Bearer {API_KEY}"
        assert fake_upstream.state.calls["/v1/moderations"] == expected_calls
    assert fake_upstream.chat_calls == 0


async def test_healthz_and_readyz(proxy: ProxyServer) -> None:
    """/healthz answers 200 while the process lives; /readyz 200 while Redis answers."""
    health = await send_raw(f"{proxy.base}/healthz", None, method="GET")
    ready = await send_raw(f"{proxy.base}/readyz", None, method="GET")
    assert (health.status, ready.status) == (200, 200)
    assert health.json()["status"] == ready.json()["status"] == "ok"
