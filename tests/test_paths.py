"""Request paths: decided on the raw bytes, refused when a decoder could re-read them, forwarded
exactly as checked; managed keys reach only their exact routes. Every case checks what the
recording upstream actually received."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proxy.config import Secret
from proxy.errors import ProxyError
from proxy.keys.routes import managed_route
from proxy.web.paths import parse_target
from tests.managed_helpers import ADMIN_TOKEN, UPSTREAM_KEY, create_key
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.raw_upstream import RawUpstream
from tests.wire import WireReply, exchange, request_bytes

PASS_THROUGH_KEY = "sk-caller-own-upstream-key"

# Each target tries to leave /v1/models (the one route a managed key may read) for /v1/files,
# or to smuggle a segment past the check. None may reach the upstream, with any key.
HOSTILE_TARGETS = [
    pytest.param("/v1/models/%2e%2e/files", id="pct-2e2e"),
    pytest.param("/v1/models/%2E%2E/files", id="pct-2E2E"),
    pytest.param("/v1/models/.%2e/files", id="dot-pct"),
    pytest.param("/v1/models/%2e./files", id="pct-dot"),
    pytest.param("/v1/models/..%2ffiles", id="dotdot-pct-slash"),
    pytest.param("/v1/models%2f..%2ffiles", id="pct-2f"),
    pytest.param("/v1/models/..%5cfiles", id="pct-5c"),
    pytest.param("/v1/models/..\\files", id="raw-backslash"),
    pytest.param("/v1/models/%252e%252e/files", id="double-encoded"),
    pytest.param("/v1/models;/../files", id="semicolon-param"),
    pytest.param("/v1/models/x%00/../files", id="pct-nul"),
    pytest.param("/v1/models/%c0%ae%c0%ae/files", id="overlong-utf8"),
    pytest.param("/v1/models/%ef%bc%8e%ef%bc%8e/files", id="fullwidth-dot"),
    pytest.param("/v1//files", id="empty-segment"),
    pytest.param("/v1/models/../files", id="raw-dot-dot"),
    pytest.param("/v1/models/./gpt-4o", id="raw-dot"),
    pytest.param("/v1/%6dodels", id="encoded-unreserved"),
    pytest.param("/v1/models/gpt-4o#/../../files", id="fragment"),
]


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    """An upstream that records every request target it receives."""
    async with RawUpstream() as server:
        yield server


@pytest.fixture
async def managed(upstream: RawUpstream, redis_url: str, key_prefix: str) -> AsyncIterator[ProxyServer]:
    """A proxy with managed keys on (admin token, its own upstream key) in front of ``upstream``."""
    settings = proxy_settings(
        upstream.url,
        redis_url,
        key_prefix,
        admin_token=Secret(ADMIN_TOKEN),
        upstream_api_key=Secret(UPSTREAM_KEY),
        auth="auto",
    )
    async with ProxyServer(settings) as server:
        yield server


@pytest.fixture
async def passthrough(upstream: RawUpstream, redis_url: str, key_prefix: str) -> AsyncIterator[ProxyServer]:
    """A pass-through proxy (callers' own bearers forwarded) in front of ``upstream``."""
    async with ProxyServer(proxy_settings(upstream.url, redis_url, key_prefix, auth="passthrough")) as server:
        yield server


async def get(proxy: ProxyServer, target: str, bearer: str, method: str = "GET") -> WireReply:
    """``method target`` sent byte for byte on a fresh connection."""
    headers = {"Authorization": f"Bearer {bearer}", "Connection": "close"}
    return await exchange(proxy.port, request_bytes(method, target, headers))


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
async def test_managed_key_hostile_path_is_400_and_nothing_is_forwarded(
    managed: ProxyServer, upstream: RawUpstream, target: str
) -> None:
    """A managed key's encoded or dot-segment path is refused 400 invalid_path; the upstream sees nothing."""
    _, secret = await create_key(managed, budget_usd=5)
    reply = await get(managed, target, secret)
    assert (reply.status, reply.error_code()) == (400, "invalid_path"), reply.body
    assert upstream.received == []


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
async def test_pass_through_hostile_path_is_400_and_nothing_is_forwarded(
    passthrough: ProxyServer, upstream: RawUpstream, target: str
) -> None:
    """A pass-through caller's hostile path is refused the same way: never re-interpreted upstream."""
    reply = await get(passthrough, target, PASS_THROUGH_KEY)
    assert (reply.status, reply.error_code()) == (400, "invalid_path"), reply.body
    assert upstream.received == []


async def test_managed_key_reaches_exactly_its_routes_with_the_proxy_key(
    managed: ProxyServer, upstream: RawUpstream
) -> None:
    """Models list and retrieve are forwarded as sent, with the proxy's key; nothing else is."""
    _, secret = await create_key(managed, budget_usd=5)
    for target in ("/v1/models", "/v1/models/gpt-4o", "/v1/models/ft:gpt-4o:org::x1?x=1"):
        reply = await get(managed, target, secret)
        assert reply.status == 200, (target, reply.body)
    assert [r.target for r in upstream.received] == [
        "/v1/models",
        "/v1/models/gpt-4o",
        "/v1/models/ft:gpt-4o:org::x1?x=1",
    ]
    assert {r.header("authorization") for r in upstream.received} == {f"Bearer {UPSTREAM_KEY}"}
    refused = [
        ("GET", "/v1/files"),
        ("GET", "/v1/chat/completions"),  # stored completions: read, but not metered
        ("GET", "/v1/models/gpt-4o/files"),
        ("POST", "/v1/models"),
        ("DELETE", "/v1/models/ft:gpt-4o:org::x1"),
        ("GET", "/v1/batches"),
    ]
    for method, target in refused:
        reply = await get(managed, target, secret, method)
        assert (reply.status, reply.error_code()) == (403, "endpoint_not_allowed"), (method, target)
    assert len(upstream.received) == 3


async def test_pass_through_target_is_forwarded_byte_for_byte(
    passthrough: ProxyServer, upstream: RawUpstream
) -> None:
    """The upstream gets the configured base plus the checked path and the raw query, unchanged."""
    target = "/v1/files/file-abc:1@x?purpose=batch&after=a%2Fb&q=%2e%2e"
    reply = await get(passthrough, target, PASS_THROUGH_KEY)
    assert reply.status == 200
    assert [r.target for r in upstream.received] == [target]
    assert upstream.received[0].header("authorization") == f"Bearer {PASS_THROUGH_KEY}"


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("/v1/models", "/v1/models"),
        ("/v1/models/gpt-4o?x=1", "/v1/models/gpt-4o"),
        ("/v1/files/a%20b%3Ac", "/v1/files/a b:c"),
        ("/", "/"),
    ],
)
def test_parse_target_decodes_only_harmless_encodings(raw: str, path: str) -> None:
    """Allowed encodings decode to printable characters that change no segment."""
    assert parse_target(raw).path == path


@pytest.mark.parametrize(
    "raw",
    ["/v1/a%2", "/v1/a%zz", "/v1/a%7f", "/v1/a%0a", "/v1/é", "/v1/a/", "v1/models", "/v1/a?b#c", "/v1/a?b c"],
)
def test_parse_target_refuses_malformed_targets(raw: str) -> None:
    """Truncated or invalid escapes, control bytes, non-ASCII, trailing slash, no leading slash."""
    with pytest.raises(ProxyError) as caught:
        parse_target(raw)
    assert caught.value.code == "invalid_path"


def test_managed_routes_are_exact() -> None:
    """The allow-list matches method and the whole path, nothing by prefix."""
    assert managed_route("GET", "/v1/models") is not None
    assert managed_route("HEAD", "/v1/models/gpt-4o") is not None
    for method, path in [
        ("GET", "/v1/models/"),
        ("GET", "/v1/modelsx"),
        ("GET", "/v1/models/a/b"),
        ("PUT", "/v1/models/a"),
        ("POST", "/v1/chat/completions"),
    ]:
        assert managed_route(method, path) is None, (method, path)
