"""Managed (proxy-issued) API keys. Only the sha256 of a secret is ever stored or compared.

`find_by_secret` returns only keys that may be used right now: an unknown, disabled or revoked
secret gives None, so the request path answers 401 for all three. Revoking deletes the
hash -> id mapping, so every replica refuses the secret on its next lookup; callers must not
cache positive lookups for longer than they are willing to honour a revoked key.

This module holds the values, the protocol, the shared store logic and the in-memory store;
the Redis store lives in ``keystore_redis`` (it builds on ``KeyStoreBase`` here).
"""

from __future__ import annotations

import builtins
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from proxy.keys.periods import Clock, Period
from proxy.keys.settings import (
    SECRET_PREFIX,
    InvalidKeySettings,
    ManagedKey,
    StaticKey,
    generate_secret,
    hash_secret,
    usd_to_micro,
    validate_settings,
)

__all__ = [
    "SECRET_PREFIX",
    "InvalidKeySettings",
    "KeyStore",
    "KeyStoreBase",
    "ManagedKey",
    "MemoryKeyStore",
    "StaticKey",
    "generate_secret",
    "usd_to_micro",
]


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
        endpoints: Iterable[str] | None = None,
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


class KeyStoreBase:
    """Shared logic of both stores; subclasses supply record storage (`_load`, `_save`, `_ids`, mapping)."""

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
        endpoints: Iterable[str] | None = None,
    ) -> tuple[ManagedKey, str]:
        """Issue a key; the plaintext secret is returned here once and never again."""
        settings = validate_settings(
            {
                "alias": alias,
                "budget_micro": budget_micro,
                "period": period,
                "allowed_models": tuple(allowed_models),
                "cache_namespace": cache_namespace,
                "rpm": rpm,
                "endpoints": None if endpoints is None else tuple(endpoints),
            }
        )
        secret = generate_secret()
        key = ManagedKey(id="key_" + secrets.token_hex(8), enabled=True, created_at=self._now(), **settings)  # type: ignore[arg-type]  # validate_settings checked every field's type above
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
        settings = validate_settings(changes)
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
                endpoints=spec.endpoints,
            )
            await self._save(key, spec.secret_sha256, None if found is None else found[1])

    async def any_keys(self) -> bool:
        """True once any key exists (revoked ones count: managed mode stays on)."""
        return bool(await self._ids())


class MemoryKeyStore(KeyStoreBase):
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
