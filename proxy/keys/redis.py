"""The Redis key store: managed keys shared by every replica (see `proxy.keys.store`)."""

from __future__ import annotations

import time
from dataclasses import fields
from datetime import datetime

import orjson
import redis.asyncio as aioredis

from proxy.keys.periods import Clock, parse_period
from proxy.keys.store import KeyStoreBase, ManagedKey


def _encode(key: ManagedKey, digest: str) -> bytes:
    record = {f.name: getattr(key, f.name) for f in fields(key)}
    return orjson.dumps({**record, "secret_sha256": digest})


def _decode(raw: bytes) -> tuple[ManagedKey, str]:
    data = orjson.loads(raw)
    revoked = data.get("revoked_at")
    key = ManagedKey(
        id=data["id"],
        alias=data["alias"],
        budget_micro=data["budget_micro"],
        period=parse_period(data["period"]),
        allowed_models=tuple(data["allowed_models"]),
        cache_namespace=data["cache_namespace"],
        rpm=data["rpm"],
        enabled=data["enabled"],
        created_at=datetime.fromisoformat(data["created_at"]),
        revoked_at=None if revoked is None else datetime.fromisoformat(revoked),
        # Records written before keys had an endpoint list allow every paid endpoint.
        endpoints=None if data.get("endpoints") is None else tuple(data["endpoints"]),
    )
    return key, data["secret_sha256"]


def _bytes(value: bytes | str) -> bytes:
    # The client is built with decode_responses=False; the str half of redis-py's types is moot.
    return value if isinstance(value, bytes) else value.encode()


class RedisKeyStore(KeyStoreBase):
    """Keys in Redis, shared by all replicas.

    `<prefix>:keys:byhash` (hash sha256 -> id), `<prefix>:key:<id>` (JSON record),
    `<prefix>:keys:ids` (set of ids, so listing needs no SCAN). Writes go record first and
    mapping last, so a half-written key is never usable.
    """

    def __init__(
        self, client: aioredis.Redis | aioredis.RedisCluster, prefix: str, clock: Clock = time.time
    ) -> None:
        super().__init__(clock)
        self._client = client
        self._prefix = prefix
        self._by_hash = f"{prefix}:keys:byhash"
        self._id_set = f"{prefix}:keys:ids"

    def _record(self, key_id: str) -> str:
        return f"{self._prefix}:key:{key_id}"

    async def _load(self, key_id: str) -> tuple[ManagedKey, str] | None:
        raw = await self._client.get(self._record(key_id))
        return None if raw is None else _decode(_bytes(raw))

    async def _save(self, key: ManagedKey, digest: str, old_digest: str | None) -> None:
        await self._client.set(self._record(key.id), _encode(key, digest))
        await self._client.sadd(self._id_set, key.id)
        if old_digest is not None and old_digest != digest:
            await self._unmap(old_digest)
        if key.revoked_at is None:
            await self._client.hset(self._by_hash, digest, key.id)

    async def _unmap(self, digest: str) -> None:
        await self._client.hdel(self._by_hash, digest)

    async def _lookup(self, digest: str) -> str | None:
        raw = await self._client.hget(self._by_hash, digest)
        return None if raw is None else _bytes(raw).decode()

    async def _ids(self) -> set[str]:
        members = await self._client.smembers(self._id_set)
        return {_bytes(m).decode() for m in members}

    async def any_keys(self) -> bool:
        """True once any key exists; SCARD, so asking on the request path stays cheap."""
        return bool(await self._client.scard(self._id_set))
