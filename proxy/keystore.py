"""Managed (proxy-issued) API keys. Only the sha256 of a secret is ever stored or compared.

`find_by_secret` returns only keys that may be used right now: an unknown, disabled or revoked
secret gives None, so the request path answers 401 for all three. Revoking deletes the
hash -> id mapping, so every replica refuses the secret on its next lookup; callers must not
cache positive lookups for longer than they are willing to honour a revoked key.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Protocol

import orjson
import redis.asyncio as aioredis

from proxy.periods import Clock, Period, parse_period

SECRET_PREFIX = "sk-lcp-"  # noqa: S105  # a public marker, not a secret
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_UPDATABLE = frozenset(
    {"alias", "budget_micro", "period", "allowed_models", "cache_namespace", "rpm", "enabled"}
)


class InvalidKeySettings(ValueError):
    """A key setting from config or the admin API has the wrong type or value."""


def generate_secret() -> str:
    """A fresh key: `sk-lcp-` and 43 URL-safe characters (256 bits of randomness)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)[:43]


def hash_secret(secret: str) -> str:
    """The sha256 hex digest under which a secret is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ManagedKey:
    """A proxy-issued key's settings; never holds the secret."""

    id: str
    alias: str
    budget_micro: int | None  # None: unlimited
    period: Period
    allowed_models: tuple[str, ...]  # fnmatch globs, case-sensitive; empty allows every model
    cache_namespace: str | None
    rpm: int | None
    enabled: bool
    created_at: datetime
    revoked_at: datetime | None = None

    def allows_model(self, model: str) -> bool:
        """True if the key may call `model`."""
        return not self.allowed_models or any(fnmatchcase(model, g) for g in self.allowed_models)

    @property
    def usable(self) -> bool:
        """Enabled and not revoked."""
        return self.enabled and self.revoked_at is None


@dataclass(frozen=True, slots=True)
class StaticKey:
    """A key declared in the TOML config, identified by the sha256 of its secret."""

    id: str
    alias: str
    secret_sha256: str
    budget_micro: int | None = None
    period: Period = "month"
    allowed_models: tuple[str, ...] = ()
    cache_namespace: str | None = None
    rpm: int | None = None
    enabled: bool = True

    @classmethod
    def from_mapping(cls, entry: Mapping[str, object]) -> StaticKey:
        """Parse one `[[keys]]` table; a plaintext `secret` is hashed here and then dropped.

        Accepts id and/or alias, secret or secret_sha256, budget_usd or budget_micro, period
        (default "month"), allowed_models, cache_namespace, rpm, enabled.
        """
        plain, digest = entry.get("secret"), entry.get("secret_sha256")
        if (plain is None) == (digest is None):
            raise InvalidKeySettings("a key needs exactly one of `secret` or `secret_sha256`")
        if plain is not None:
            digest = hash_secret(_str(plain, "secret"))
        digest = _str(digest, "secret_sha256").lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise InvalidKeySettings("secret_sha256 must be 64 hex digits")
        key_id = _opt_str(entry.get("id"), "id") or _opt_str(entry.get("alias"), "alias")
        if not key_id:
            raise InvalidKeySettings("a key needs an `id` or an `alias`")
        settings = {k: v for k, v in entry.items() if k in _UPDATABLE}
        settings.setdefault("alias", key_id)
        if entry.get("budget_usd") is not None:
            settings["budget_micro"] = usd_to_micro(entry["budget_usd"])
        # _validated checked every field's type.
        return cls(id=key_id, secret_sha256=digest, **_validated(settings))  # type: ignore[arg-type]


def usd_to_micro(usd: object) -> int:
    """A USD amount from config or the admin API as exact integer micro-USD."""
    # Decimal, not float arithmetic: 1.1 USD must be exactly 1_100_000 micro-USD.
    error = InvalidKeySettings("budget_usd must be a non-negative number")
    if isinstance(usd, bool) or not isinstance(usd, int | float | str):
        raise error
    try:
        micro = Decimal(str(usd)) * 1_000_000
    except InvalidOperation:
        raise error from None
    if not micro.is_finite() or micro < 0:
        raise error
    return int(micro)


def _str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidKeySettings(f"{name} must be a string")
    return value


def _opt_str(value: object, name: str) -> str | None:
    return None if value is None else _str(value, name)


def _opt_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidKeySettings(f"{name} must be a non-negative integer or null")
    return value


def _validated(changes: Mapping[str, object]) -> dict[str, object]:
    """Check field names and types of a settings change; normalise model lists to tuples."""
    out: dict[str, object] = {}
    for name, value in changes.items():
        if name not in _UPDATABLE:
            raise InvalidKeySettings(f"{name!r} cannot be changed")
        if name == "alias":
            out[name] = _str(value, name)
        elif name == "period":
            try:
                out[name] = parse_period(_str(value, name))
            except ValueError as exc:
                raise InvalidKeySettings(str(exc)) from None
        elif name == "allowed_models":
            models = [value] if isinstance(value, str) else value
            if not isinstance(models, list | tuple) or not all(isinstance(m, str) for m in models):
                raise InvalidKeySettings("allowed_models must be a list of strings")
            out[name] = tuple(models)
        elif name == "cache_namespace":
            out[name] = _opt_str(value, name)
        elif name == "enabled":
            if not isinstance(value, bool):
                raise InvalidKeySettings("enabled must be true or false")
            out[name] = value
        else:
            out[name] = _opt_int(value, name)
    return out


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
    )
    return key, data["secret_sha256"]


class KeyStore(Protocol):
    """Where managed keys live; both backends behave the same."""

    async def create(
        self,
        alias: str,
        budget_micro: int | None,
        period: Period,
        *,
        allowed_models: Iterable[str] = (),
        cache_namespace: str | None = None,
        rpm: int | None = None,
    ) -> tuple[ManagedKey, str]:
        """Issue a key; the plaintext secret is returned here once and never again."""
        ...

    async def get(self, key_id: str) -> ManagedKey | None:
        """The key with this id, revoked or not."""
        ...

    async def find_by_secret(self, secret: str) -> ManagedKey | None:
        """The usable key for a presented secret; None if unknown, disabled or revoked."""
        ...

    async def list(self) -> builtins.list[ManagedKey]:
        """Every key, revoked ones included, oldest first."""
        ...

    async def update(self, key_id: str, **changes: object) -> ManagedKey:
        """Change settings; KeyError if unknown, ValueError for bad values or re-enabling."""
        ...

    async def revoke(self, key_id: str) -> bool:
        """Refuse the key's secret from now on, for good; False if it was unknown or revoked."""
        ...

    async def load_static(self, entries: Iterable[StaticKey | Mapping[str, object]]) -> None:
        """Upsert keys declared in config; a revoked key stays revoked."""
        ...

    async def any_keys(self) -> bool:
        """True once any key exists (revoked ones count: managed mode stays on)."""
        ...


class _Base:
    """Shared logic; subclasses supply record storage (`_load`, `_save`, `_ids`, mapping)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _load(self, key_id: str) -> tuple[ManagedKey, str] | None:
        raise NotImplementedError

    async def _save(self, key: ManagedKey, digest: str, old_digest: str | None) -> None:
        raise NotImplementedError

    async def _unmap(self, digest: str) -> None:
        raise NotImplementedError

    async def _lookup(self, digest: str) -> str | None:
        raise NotImplementedError

    async def _ids(self) -> set[str]:
        raise NotImplementedError

    async def create(
        self,
        alias: str,
        budget_micro: int | None,
        period: Period,
        *,
        allowed_models: Iterable[str] = (),
        cache_namespace: str | None = None,
        rpm: int | None = None,
    ) -> tuple[ManagedKey, str]:
        """Issue a key; the plaintext secret is returned here once and never again."""
        settings = _validated(
            {
                "alias": alias,
                "budget_micro": budget_micro,
                "period": period,
                "allowed_models": tuple(allowed_models),
                "cache_namespace": cache_namespace,
                "rpm": rpm,
            }
        )
        secret = generate_secret()
        key = ManagedKey(id="key_" + secrets.token_hex(8), enabled=True, created_at=self._now(), **settings)  # type: ignore[arg-type]  # _validated checked every field's type above
        await self._save(key, hash_secret(secret), None)
        return key, secret

    async def get(self, key_id: str) -> ManagedKey | None:
        """The key with this id, revoked or not."""
        found = await self._load(key_id)
        return None if found is None else found[0]

    async def find_by_secret(self, secret: str) -> ManagedKey | None:
        """The usable key for a presented secret; None if unknown, disabled or revoked."""
        digest = hash_secret(secret)
        key_id = await self._lookup(digest)
        found = None if key_id is None else await self._load(key_id)
        if found is None or found[1] != digest or not found[0].usable:
            return None
        return found[0]

    async def list(self) -> builtins.list[ManagedKey]:
        """Every key, revoked ones included, oldest first."""
        keys = [found[0] for i in await self._ids() if (found := await self._load(i))]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def update(self, key_id: str, **changes: object) -> ManagedKey:
        """Change settings; KeyError if unknown, ValueError for bad values or re-enabling."""
        found = await self._load(key_id)
        if found is None:
            raise KeyError(key_id)
        key, digest = found
        settings = _validated(changes)
        if key.revoked_at is not None and settings.get("enabled"):
            raise InvalidKeySettings("a revoked key cannot be re-enabled; issue a new one")
        updated = replace(key, **settings)  # type: ignore[arg-type]  # types checked above
        await self._save(updated, digest, digest)
        return updated

    async def revoke(self, key_id: str) -> bool:
        """Refuse the key's secret from now on, for good; False if it was unknown or revoked."""
        found = await self._load(key_id)
        if found is None or found[0].revoked_at is not None:
            return False
        key, digest = found
        await self._unmap(digest)  # first: from here on no replica accepts the secret
        await self._save(replace(key, enabled=False, revoked_at=self._now()), digest, digest)
        return True

    async def load_static(self, entries: Iterable[StaticKey | Mapping[str, object]]) -> None:
        """Upsert keys declared in config; a revoked key stays revoked."""
        for entry in entries:
            spec = entry if isinstance(entry, StaticKey) else StaticKey.from_mapping(entry)
            owner = await self._lookup(spec.secret_sha256)
            if owner not in (None, spec.id):
                raise InvalidKeySettings(f"key {spec.id!r} reuses the secret of key {owner!r}")
            found = await self._load(spec.id)
            if found is not None and found[0].revoked_at is not None:
                continue
            key = ManagedKey(
                spec.id,
                spec.alias,
                spec.budget_micro,
                spec.period,
                spec.allowed_models,
                spec.cache_namespace,
                spec.rpm,
                spec.enabled,
                self._now() if found is None else found[0].created_at,
            )
            await self._save(key, spec.secret_sha256, None if found is None else found[1])

    async def any_keys(self) -> bool:
        """True once any key exists (revoked ones count: managed mode stays on)."""
        return bool(await self._ids())


class MemoryKeyStore(_Base):
    """Keys in process memory, for the embedded single-process mode and tests."""

    def __init__(self, clock: Clock = time.time) -> None:
        super().__init__(clock)
        self._records: dict[str, tuple[ManagedKey, str]] = {}
        self._by_hash: dict[str, str] = {}

    async def _load(self, key_id: str) -> tuple[ManagedKey, str] | None:
        return self._records.get(key_id)

    async def _save(self, key: ManagedKey, digest: str, old_digest: str | None) -> None:
        self._records[key.id] = (key, digest)
        if old_digest is not None and old_digest != digest:
            self._by_hash.pop(old_digest, None)
        if key.revoked_at is None:
            self._by_hash[digest] = key.id

    async def _unmap(self, digest: str) -> None:
        self._by_hash.pop(digest, None)

    async def _lookup(self, digest: str) -> str | None:
        return self._by_hash.get(digest)

    async def _ids(self) -> set[str]:
        return set(self._records)


def _bytes(value: bytes | str) -> bytes:
    # The client is built with decode_responses=False; the str half of redis-py's types is moot.
    return value if isinstance(value, bytes) else value.encode()


class RedisKeyStore(_Base):
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
