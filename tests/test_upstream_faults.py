"""An upstream that answers 200 with a body the client cannot use: cut short, a lying
Content-Length, broken chunking, not JSON. The client gets a 502 OpenAI error, nothing is cached,
a flight's followers get the same 502, and a managed key's spend is settled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from proxy.config import Secret
from tests.e2e_helpers import TEXT_MODEL, chat_body, chat_raw
from tests.managed_helpers import ADMIN_TOKEN, UPSTREAM_KEY, create_key, key_status
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.raw_upstream import RawUpstream, Received, http_response, json_response

GOOD = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": TEXT_MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}
WHOLE = orjson.dumps(GOOD)


def good(_request: Received) -> bytes:
    """A complete, valid answer."""
    return json_response(GOOD)


def cut_short(_request: Received) -> bytes:
    """Content-Length promises the whole body; the connection closes half-way."""
    return http_response(200, WHOLE[: len(WHOLE) // 2], content_length=len(WHOLE))


def short_length(_request: Received) -> bytes:
    """Content-Length says less than was sent: the client reads a prefix that is not JSON."""
    return http_response(200, WHOLE, content_length=len(WHOLE) - 10)


def non_json(_request: Received) -> bytes:
    """A 200 from some HTML error page in front of the API."""
    return http_response(200, b"<html><body>Bad Gateway</body></html>", {"Content-Type": "text/html"})


def broken_chunks(_request: Received) -> bytes:
    """Chunked, and the terminating chunk never comes."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    part = WHOLE[:40]
    return head + f"{len(part):x}\r\n".encode() + part + b"\r\n"


def empty(_request: Received) -> bytes:
    """A 200 with an empty body."""
    return http_response(200, b"")


FAULTS = [
    pytest.param(cut_short, id="cut-short"),
    pytest.param(short_length, id="content-length-too-small"),
    pytest.param(non_json, id="non-json"),
    pytest.param(broken_chunks, id="chunked-without-end"),
    pytest.param(empty, id="empty"),
]


class Switchable:
    """An answer function the test can change between requests."""

    def __init__(self, answer: Callable[[Received], bytes]) -> None:
        self.answer = answer

    def __call__(self, request: Received) -> bytes:
        return self.answer(request)


@pytest.fixture
async def answers() -> Switchable:
    """What the upstream answers; starts valid."""
    return Switchable(good)


@pytest.fixture
async def upstream(answers: Switchable) -> AsyncIterator[RawUpstream]:
    """The recording upstream, answering with ``answers``."""
    async with RawUpstream(answers) as server:
        yield server


@pytest.fixture
async def proxy(upstream: RawUpstream, redis_url: str, key_prefix: str) -> AsyncIterator[ProxyServer]:
    """Pass-through proxy on Redis with the admin API (for managed keys)."""
    settings = proxy_settings(
        upstream.url,
        redis_url,
        key_prefix,
        admin_token=Secret(ADMIN_TOKEN),
        upstream_api_key=Secret(UPSTREAM_KEY),
    )
    async with ProxyServer(settings) as server:
        yield server


def assert_invalid_response(status: int, body: bytes) -> None:
    """502 ``server_error`` / ``upstream_invalid_response`` in OpenAI's shape."""
    assert status == 502, body[:300]
    error = orjson.loads(body)["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_invalid_response")


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream-asked-json-answered"])
async def test_unusable_200_is_502_and_never_cached(
    proxy: ProxyServer,
    upstream: RawUpstream,
    answers: Switchable,
    fault: Callable[[Received], bytes],
    stream: bool,
) -> None:
    """The client gets 502 upstream_invalid_response, not a 200 its SDK cannot parse; the next
    identical request goes upstream again and is then cached."""
    answers.answer = fault
    body = chat_body("is this cached?", stream=stream) if stream else chat_body("is this cached?")
    first = await chat_raw(proxy, body)
    assert_invalid_response(first.status, first.body)
    answers.answer = good
    second = await chat_raw(proxy, chat_body("is this cached?"))
    assert (second.status, second.headers["X-Cache"]) == (200, "MISS")
    assert second.json() == GOOD
    third = await chat_raw(proxy, chat_body("is this cached?"))
    assert (third.status, third.headers["X-Cache"]) == (200, "HIT")
    assert len(upstream.complete) == 2


async def test_followers_of_the_flight_get_the_same_502(
    upstream: RawUpstream, proxy: ProxyServer, answers: Switchable
) -> None:
    """Identical concurrent requests make one upstream call and all get its 502 (shared, like a 400)."""
    answers.answer = cut_short
    upstream.delay_s = 1.0
    replies = await asyncio.gather(*(chat_raw(proxy, chat_body("together")) for _ in range(4)))
    for reply in replies:
        assert_invalid_response(reply.status, reply.body)
    assert sorted(reply.headers["X-Cache"] for reply in replies) == ["COALESCED"] * 3 + ["MISS"]
    assert len({reply.body for reply in replies}) == 1
    assert len(upstream.complete) == 1


async def test_managed_key_spend_is_settled_after_an_unusable_200(
    proxy: ProxyServer, answers: Switchable
) -> None:
    """The upstream may have billed a 200: the reservation is kept as spend, nothing stays reserved."""
    answers.answer = cut_short
    key, secret = await create_key(proxy, budget_usd=5)
    reply = await chat_raw(proxy, chat_body("bill me", max_tokens=100), api_key=secret)
    assert_invalid_response(reply.status, reply.body)
    status = await key_status(proxy, key["id"])
    assert status["spend_usd"] > 0
    assert status["reserved_usd"] == 0
