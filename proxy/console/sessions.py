"""Admin sessions of the console: server-side, random ids, expiring, and a CSRF token each.

Server-side rather than signed cookies so that logging out ends the session everywhere at once
(a signed cookie stays valid until it expires, whoever holds a copy). The session id travels only
in an ``HttpOnly`` cookie; the store keeps ``sha256(id)``, so a dump of Redis yields no usable
session. In Redis (``{p}:console:session:{sha256}``, TTL = the session's life) every replica knows
every session; without Redis they live in this process (one process: the in-memory store's case).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.keys.settings import hash_secret
from proxy.storage.base import guarded

SESSION_S = 8 * 3600
_MEMORY_CAP = 1000  # open sessions kept in memory (the oldest go first)


@dataclass(frozen=True, slots=True)
class Session:
    """An open admin session: its CSRF token (sent back in ``X-CSRF-Token`` on every change)."""

    csrf: str


def _digest(session_id: str) -> str:
    return hash_secret(session_id)


class SessionStore(Protocol):
    async def open(self) -> tuple[str, Session]: ...
    async def get(self, session_id: str) -> Session | None: ...
    async def close(self, session_id: str) -> None: ...


class MemorySessions:
    """Sessions in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._open: dict[str, tuple[float, Session]] = {}

    async def open(self) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32))
        if len(self._open) >= _MEMORY_CAP:
            del self._open[next(iter(self._open))]
        self._open[_digest(session_id)] = (self.clock() + SESSION_S, session)
        return session_id, session

    async def get(self, session_id: str) -> Session | None:
        found = self._open.get(_digest(session_id))
        if found is None:
            return None
        if found[0] <= self.clock():
            del self._open[_digest(session_id)]
            return None
        return found[1]

    async def close(self, session_id: str) -> None:
        self._open.pop(_digest(session_id), None)


class RedisSessions:
    """Sessions in Redis: every replica sees a login and a logout at once."""

    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str, timeout: float) -> None:
        self.client = client
        self.prefix = f"{prefix}:console:session:"
        self.timeout = timeout

    async def open(self) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32))
        async with guarded("session SET", self.timeout):
            await self.client.set(self.prefix + _digest(session_id), session.csrf, ex=SESSION_S)
        return session_id, session

    async def get(self, session_id: str) -> Session | None:
        async with guarded("session GET", self.timeout):
            csrf = await self.client.get(self.prefix + _digest(session_id))
        if csrf is None:
            return None
        return Session(csrf.decode() if isinstance(csrf, bytes) else str(csrf))

    async def close(self, session_id: str) -> None:
        async with guarded("session DEL", self.timeout):
            await self.client.delete(self.prefix + _digest(session_id))


class LoginLimiter:
    """At most ``limit`` wrong tokens per client address per ``window`` seconds (then 429).

    Per process (each replica counts its own): with a ≥ 32-character token, guessing is hopeless
    anyway; this keeps a script from hammering the compare and filling logs.
    """

    def __init__(self, limit: int = 10, window: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, list[float]] = {}

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may try again (0: now)."""
        now = self.clock()
        recent = [t for t in self._failures.get(address, []) if now - t < self.window]
        if recent:
            self._failures[address] = recent
        else:
            self._failures.pop(address, None)
        if len(recent) < self.limit:
            return 0
        return max(1, int(self.window - (now - recent[0])) + 1)

    def failed(self, address: str) -> None:
        if len(self._failures) >= 10_000 and address not in self._failures:
            self._failures.clear()  # bounded: an address flood forgets, it never grows memory
        self._failures.setdefault(address, []).append(self.clock())
