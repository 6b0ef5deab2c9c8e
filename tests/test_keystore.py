"""Managed keys in Redis and in memory: issue, look up by secret, update, revoke, config keys."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from proxy.keys.redis import RedisKeyStore
from proxy.keys.settings import hash_secret
from proxy.keys.store import (
    InvalidKeySettings,
    KeyStore,
    ManagedKey,
    MemoryKeyStore,
    StaticKey,
    generate_secret,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


def _clock() -> float:
    return T0


@pytest.fixture(params=["redis", "memory"])
async def store(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis, key_prefix: str
) -> AsyncIterator[KeyStore]:
    """The same tests run against the Redis key store and the in-memory one."""
    if request.param == "redis":
        yield RedisKeyStore(redis_client, key_prefix, clock=_clock)
    else:
        yield MemoryKeyStore(clock=_clock)


def test_secret_shape_and_hash() -> None:
    """Secrets are sk-lcp- plus 43 URL-safe chars, unique, and hash to their sha256 hex."""
    secrets = {generate_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(re.fullmatch(r"sk-lcp-[A-Za-z0-9_-]{43}", s) for s in secrets)
    assert hash_secret("abc") == hashlib.sha256(b"abc").hexdigest()


def test_allows_model_globs() -> None:
    """Empty allow-list admits every model; otherwise case-sensitive fnmatch globs decide."""
    key = ManagedKey("k", "a", None, "day", (), None, None, True, datetime.now(UTC))
    assert key.allows_model("anything")
    globbed = ManagedKey("k", "a", None, "day", ("gpt-4o*", "gemini-*"), None, None, True, key.created_at)
    assert globbed.allows_model("gpt-4o-mini")
    assert globbed.allows_model("gemini-2.5-flash-image-preview")
    assert not globbed.allows_model("GPT-4o")
    assert not globbed.allows_model("claude-3")


async def test_create_and_find_by_secret(store: KeyStore) -> None:
    """A created key is found by its plaintext secret once, and only by that secret."""
    assert not await store.any_keys()
    key, secret = await store.create(
        "team-a", 5_000_000, "month", allowed_models=["gpt-*"], cache_namespace="ns", rpm=60
    )
    assert await store.any_keys()
    assert secret.startswith("sk-lcp-")
    assert (key.alias, key.budget_micro, key.period, key.allowed_models) == (
        "team-a",
        5_000_000,
        "month",
        ("gpt-*",),
    )
    assert (key.cache_namespace, key.rpm, key.enabled, key.revoked_at) == ("ns", 60, True, None)
    assert key.created_at == datetime.fromtimestamp(T0, UTC)
    assert await store.find_by_secret(secret) == key
    assert await store.find_by_secret(secret + "x") is None
    assert await store.get(key.id) == key
    assert await store.get("missing") is None


async def test_list_and_update(store: KeyStore) -> None:
    """Updates change settings, are validated, and list shows every key."""
    first, secret = await store.create("a", None, "day")
    second, _ = await store.create("b", 10, "total")
    assert {k.id for k in await store.list()} == {first.id, second.id}
    updated = await store.update(first.id, budget_micro=99, allowed_models=["m1"], alias="A")
    assert (updated.budget_micro, updated.allowed_models, updated.alias) == (99, ("m1",), "A")
    assert await store.find_by_secret(secret) == updated
    with pytest.raises(InvalidKeySettings):
        await store.update(first.id, budget_micro="lots")
    with pytest.raises(InvalidKeySettings):
        await store.update(first.id, period="week")
    with pytest.raises(InvalidKeySettings):
        await store.update(first.id, id="other")
    with pytest.raises(KeyError):
        await store.update("missing", rpm=1)


async def test_disabled_key_is_refused_until_reenabled(store: KeyStore) -> None:
    """A disabled key's secret finds nothing; enabling it again restores it."""
    key, secret = await store.create("a", None, "day")
    await store.update(key.id, enabled=False)
    assert await store.find_by_secret(secret) is None
    await store.update(key.id, enabled=True)
    assert await store.find_by_secret(secret) is not None


async def test_revoke_is_immediate_and_final(store: KeyStore) -> None:
    """A revoked secret is refused at once, the record stays for audit, and cannot come back."""
    key, secret = await store.create("a", None, "day")
    assert await store.revoke(key.id)
    assert await store.find_by_secret(secret) is None
    record = await store.get(key.id)
    assert record is not None
    assert (record.enabled, record.revoked_at) == (False, datetime.fromtimestamp(T0, UTC))
    assert not await store.revoke(key.id)
    assert not await store.revoke("missing")
    with pytest.raises(InvalidKeySettings):
        await store.update(key.id, enabled=True)
    await store.update(key.id, budget_micro=1)
    assert await store.find_by_secret(secret) is None
    assert await store.any_keys()


async def test_load_static_upserts_config_keys(store: KeyStore) -> None:
    """TOML keys (plaintext or sha256) are upserted by id; a revoked one stays revoked."""
    plain = "sk-config-plaintext-secret"
    other = generate_secret()
    await store.load_static(
        [
            {"id": "ci", "secret": plain, "budget_usd": 1.25, "period": "day", "rpm": 5},
            {"alias": "batch", "secret_sha256": hash_secret(other).upper()},
        ]
    )
    ci = await store.find_by_secret(plain)
    assert ci is not None
    assert (ci.id, ci.alias, ci.budget_micro, ci.period, ci.rpm) == ("ci", "ci", 1_250_000, "day", 5)
    batch = await store.find_by_secret(other)
    assert batch is not None
    assert (batch.id, batch.period, batch.budget_micro) == ("batch", "month", None)
    rotated = "sk-config-rotated"
    await store.load_static([{"id": "ci", "secret": rotated, "budget_micro": 7}])
    assert await store.find_by_secret(plain) is None
    again = await store.find_by_secret(rotated)
    assert again is not None
    assert (again.budget_micro, again.created_at) == (7, ci.created_at)
    await store.revoke("ci")
    await store.load_static([StaticKey(id="ci", alias="ci", secret_sha256=hash_secret(rotated))])
    assert await store.find_by_secret(rotated) is None
    with pytest.raises(InvalidKeySettings):
        await store.load_static([{"id": "dup", "secret": other}])


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "x"},
        {"id": "x", "secret": "a", "secret_sha256": "0" * 64},
        {"id": "x", "secret_sha256": "not-hex"},
        {"secret": "a"},
        {"id": "x", "secret": "a", "budget_usd": "many"},
        {"id": "x", "secret": "a", "allowed_models": [1]},
        {"id": "x", "secret": "a", "enabled": "yes"},
        {"id": "x", "secret": "a", "rpm": -1},
    ],
)
def test_static_entry_validation(entry: dict[str, object]) -> None:
    """Malformed [[keys]] tables are rejected with a clear error, never half-loaded."""
    with pytest.raises(InvalidKeySettings):
        StaticKey.from_mapping(entry)


async def test_plaintext_secret_never_reaches_redis(redis_client: aioredis.Redis, key_prefix: str) -> None:
    """No Redis key or value under the prefix contains an issued or configured plaintext secret."""
    store = RedisKeyStore(redis_client, key_prefix)
    _, issued = await store.create("a", 1, "day")
    revoked, revoked_secret = await store.create("b", None, "total")
    await store.revoke(revoked.id)
    configured = "sk-configured-in-toml"
    await store.load_static([{"id": "c", "secret": configured}])
    dump = b""
    async for raw_key in redis_client.scan_iter(match=f"{key_prefix}*", count=1000):
        raw_type = await redis_client.type(raw_key)
        kind = raw_type.decode() if isinstance(raw_type, bytes) else raw_type
        if kind == "string":
            value = repr(await redis_client.get(raw_key)).encode()
        elif kind == "hash":
            value = repr(await redis_client.hgetall(raw_key)).encode()
        else:
            assert kind == "set"
            value = repr(await redis_client.smembers(raw_key)).encode()
        dump += raw_key + b"\n" + value + b"\n"
    assert hash_secret(issued).encode() in dump
    for secret in (issued, revoked_secret, configured):
        assert secret.encode() not in dump
        assert secret.removeprefix("sk-lcp-").encode() not in dump
