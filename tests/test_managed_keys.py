"""Managed keys on the request path: who gets in, what goes upstream, and where secrets never appear."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
import redis.asyncio as aioredis

from proxy.cache.keys import managed_namespace
from proxy.keys.settings import hash_secret
from proxy.keys.store import ManagedKey
from tests.e2e_helpers import IMAGE_MODEL, TEXT_MODEL, chat_body, chat_raw, send_raw
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import (
    UPSTREAM_KEY,
    admin,
    create_key,
    key_status,
    managed_proxy,
    metric_value,
    metrics_text,
)
from tests.proxy_harness import ProxyServer, free_port

STATIC_SECRET = "sk-lcp-static-key-from-the-toml-file-0123456789"


async def test_unknown_bearers_get_401_once_a_managed_key_exists(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Pass-through works until a key is issued; then unknown and missing bearers get invalid_api_key."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        fake_upstream.state.valid_keys = None
        before = await chat_raw(proxy, chat_body("hi"), api_key="sk-some-upstream-key")
        _, secret = await create_key(proxy)
        unknown = await chat_raw(proxy, chat_body("hi"), api_key="sk-some-upstream-key")
        missing = await chat_raw(proxy, chat_body("hi"), api_key=None)
        forged = await chat_raw(proxy, chat_body("hi"), api_key=secret[:-1] + "x")
    assert before.status == 200
    for reply in (unknown, missing, forged):
        assert reply.status == 401
        assert reply.json()["error"]["code"] == "invalid_api_key"


async def test_managed_requests_use_the_proxy_upstream_key(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Upstream sees PROXY_UPSTREAM_API_KEY, never the managed secret; /v1/models works, others 403."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        _, secret = await create_key(proxy)
        chat = await chat_raw(proxy, chat_body("hi"), api_key=secret)
        models = await send_raw(f"{proxy.url}/models", method="GET", api_key=secret)
        moderations = await send_raw(f"{proxy.url}/moderations", {"input": "x"}, api_key=secret)
    assert (chat.status, models.status, moderations.status) == (200, 200, 403)
    assert moderations.json()["error"]["code"] == "endpoint_not_allowed"
    assert fake_upstream.state.auth_headers == [f"Bearer {UPSTREAM_KEY}"]  # chat calls only


async def test_model_allow_list_and_rpm_limit(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A model outside the globs gets 403; over the RPM limit gets a retryable 429 rate_limit_exceeded."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        _, secret = await create_key(proxy, allowed_models=["gpt-4o*"], rpm=2)
        denied = await chat_raw(proxy, chat_body("hi", IMAGE_MODEL), api_key=secret)
        allowed = [await chat_raw(proxy, chat_body(text), api_key=secret) for text in ("one", "two")]
        limited = await chat_raw(proxy, chat_body("three"), api_key=secret)
    assert denied.status == 403
    assert denied.json()["error"]["code"] == "model_not_allowed"
    assert [r.status for r in allowed] == [200, 200]
    assert limited.status == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert "x-should-retry" not in limited.headers
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


async def test_revoked_key_is_refused_by_every_replica(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Revoking on one replica refuses the key on the next request to another, hits included."""
    async with (
        managed_proxy(fake_upstream, redis_url, key_prefix) as one,
        managed_proxy(fake_upstream, redis_url, key_prefix) as two,
    ):
        key, secret = await create_key(one)
        warm = await chat_raw(two, chat_body("cached"), api_key=secret)
        revoked = await admin(one, "DELETE", f"/keys/{key['id']}")
        replies = [await chat_raw(p, chat_body("cached"), api_key=secret) for p in (one, two)]
        update = await admin(two, "PATCH", f"/keys/{key['id']}", {"enabled": True})
    assert warm.status == 200
    assert revoked.json()["revoked"] is True
    assert [r.status for r in replies] == [401, 401]
    assert update.status == 400
    assert fake_upstream.chat_calls == 1


async def test_keys_from_config_and_shared_namespaces(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """TOML keys work from the first request; keys naming one cache namespace share answers."""
    keys = (
        {"id": "web", "secret": STATIC_SECRET, "budget_usd": 5, "cache_namespace": "shop"},
        {"id": "batch", "secret_sha256": hash_secret(STATIC_SECRET + "2"), "cache_namespace": "shop"},
        {"id": "other", "secret": STATIC_SECRET + "3"},
    )
    async with managed_proxy(fake_upstream, redis_url, key_prefix, keys=keys) as proxy:
        first = await chat_raw(proxy, chat_body("shared?"), api_key=STATIC_SECRET)
        sharing = await chat_raw(proxy, chat_body("shared?"), api_key=STATIC_SECRET + "2")
        separate = await chat_raw(proxy, chat_body("shared?"), api_key=STATIC_SECRET + "3")
        status = await key_status(proxy, "web")
    assert [r.headers["X-Cache"] for r in (first, sharing, separate)] == ["MISS", "HIT", "MISS"]
    assert status["budget_usd"] == 5
    assert status["effective_cache_namespace"] == "n-shop"


def test_managed_namespaces_never_collide() -> None:
    """Key ids and named namespaces map to distinct namespaces; dots cannot fake a sub-namespace."""
    from datetime import UTC, datetime  # noqa: PLC0415

    def key(key_id: str, namespace: str | None = None) -> ManagedKey:
        return ManagedKey(key_id, key_id, None, "day", (), namespace, None, True, datetime.now(UTC))

    names = {
        managed_namespace(key("a"), "key", None),
        managed_namespace(key("a"), "key", "b"),
        managed_namespace(key("a.b"), "key", None),
        managed_namespace(key("x", "a"), "key", None),
        managed_namespace(key("x", "a.b"), "key", None),
    }
    assert len(names) == 5
    assert managed_namespace(key("a"), "shared", None) == "shared"


async def test_plaintext_secrets_appear_nowhere(
    fake_upstream: FakeUpstream,
    redis_url: str,
    key_prefix: str,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After misses, hits, streams, refusals and a revoke, no secret is in Redis, logs or metrics."""
    caplog.set_level(logging.DEBUG)
    keys = ({"id": "static", "secret": STATIC_SECRET, "budget_usd": 1},)
    async with managed_proxy(fake_upstream, redis_url, key_prefix, keys=keys) as proxy:
        key, secret = await create_key(proxy, budget_usd=0.00001, rpm=100)
        for bearer in (secret, STATIC_SECRET):
            await chat_raw(proxy, chat_body("hello"), api_key=bearer)
            await chat_raw(proxy, chat_body("hello"), api_key=bearer)
            await chat_raw(proxy, chat_body("stream", stream=True), api_key=bearer)
        await admin(proxy, "GET", f"/keys/{key['id']}/usage")
        await admin(proxy, "DELETE", f"/keys/{key['id']}")
        await chat_raw(proxy, chat_body("hello"), api_key=secret)
        metrics = await metrics_text(proxy)
    stored = await _dump_redis(redis_client, key_prefix)
    assert len(stored) > 1000
    for plain in (secret, STATIC_SECRET):
        assert plain.encode() not in stored
        assert plain not in caplog.text
        assert plain not in metrics
    assert hash_secret(secret).encode() in stored
    assert metric_value(metrics, "llm_proxy_key_spend_usd_total", key="static") > 0


async def _dump_redis(client: aioredis.Redis, prefix: str) -> bytes:
    """Every key name and value under ``prefix``, whatever its type."""
    out = bytearray()
    async for name in client.scan_iter(match=f"{prefix}*", count=1000):
        out += name
        kind = await client.type(name)
        if kind == b"string":
            out += await client.get(name) or b""
        elif kind == b"hash":
            out += orjson.dumps({k.decode(): v.decode() for k, v in (await client.hgetall(name)).items()})
        elif kind == b"set":
            out += b" ".join(await client.smembers(name))
        elif kind == b"zset":
            out += b" ".join(await client.zrange(name, 0, -1))
        elif kind == b"stream":
            for _id, fields in await client.xrange(name):
                out += b" ".join(k + b"=" + v for k, v in fields.items())
    return bytes(out)


async def test_in_memory_mode_enforces_the_same_rules(fake_upstream: FakeUpstream, key_prefix: str) -> None:
    """Without Redis, concurrent requests cannot overspend either, and revoking works."""
    fake_upstream.state.image_bytes = 20_000
    fake_upstream.state.image_latency_s = 0.1
    async with managed_proxy(fake_upstream, None, key_prefix) as proxy:
        key, secret = await create_key(proxy, budget_usd=0.08)  # two images
        # Each client bounds its answer to one image, so each reserves one image's worth.
        bodies = [chat_body(f"picture {i}", IMAGE_MODEL, max_tokens=1300) for i in range(8)]
        replies = await asyncio.gather(*(chat_raw(proxy, b, api_key=secret) for b in bodies))
        status = await key_status(proxy, key["id"])
        await admin(proxy, "DELETE", f"/keys/{key['id']}")
        revoked = await chat_raw(proxy, bodies[0], api_key=secret)
    assert sorted(r.status for r in replies) == [200, 200] + [429] * 6
    assert fake_upstream.chat_calls == 2
    assert status["spend_micro_usd"] <= 80_000
    assert revoked.status == 401


async def test_key_store_down_fails_closed(fake_upstream: FakeUpstream, key_prefix: str) -> None:
    """With Redis unreachable, a managed key gets a 503 in OpenAI's shape, quickly, not a hang."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    keys = ({"id": "static", "secret": STATIC_SECRET, "budget_usd": 1},)
    async with managed_proxy(fake_upstream, dead, key_prefix, keys=keys) as proxy:
        reply = await asyncio.wait_for(chat_raw(proxy, chat_body("hi"), api_key=STATIC_SECRET), 10)
    assert reply.status == 503
    assert reply.json()["error"]["code"] == "budget_store_unavailable"
    assert fake_upstream.chat_calls == 0


async def test_managed_metrics_use_the_alias(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Per-key spend and remaining-budget gauges are labelled with the alias."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, alias="team-b", budget_usd=2)
        await chat_raw(proxy, chat_body("hi", TEXT_MODEL), api_key=secret)
        text = await metrics_text(proxy)
        status = await key_status(proxy, key["id"])
    spent = metric_value(text, "llm_proxy_key_spend_usd_total", key="team-b")
    assert spent == pytest.approx(status["spend_usd"])
    assert metric_value(text, "llm_proxy_key_budget_usd", key="team-b") == 2
    assert metric_value(text, "llm_proxy_key_budget_remaining_usd", key="team-b") == pytest.approx(2 - spent)


async def test_proxy_server_alias_is_exported(proxy: ProxyServer) -> None:
    """Without keys the default proxy stays in pass-through mode (managed wiring is inert)."""
    reply = await chat_raw(proxy, chat_body("plain pass-through"))
    assert reply.status == 200
