"""Single flight: identical concurrent misses make one upstream call, in one process and across many.

In-process, followers await the leader's future. Across processes, the leader holds a Redis lock
(``SET NX PX``, refreshed while the generation runs) and announces the outcome on one pub/sub
channel; followers elsewhere wait for that message (no busy polling) or for the lock to lapse, in
which case one of them takes over. If the Redis side fails, a process simply leads alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.cache import CachedEntry

log = logging.getLogger(__name__)

Kind = Literal["entry", "stored", "error", "retry"]
# KEYS: lock, entry; ARGV: token, ms. 0: someone else leads; 1: we lead, no entry; 2: we lead, entry.
_LOCK = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1 + redis.call('exists', KEYS[2])
end
return 0
"""
# One round trip at the end of every flight: keep the error for remote followers, drop our lock,
# tell everyone. KEYS: lock, error; ARGV: token, channel, message, error payload ('' for none).
_ANNOUNCE = """
if ARGV[4] ~= '' then redis.call('set', KEYS[2], ARGV[4], 'EX', 60) end
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
return redis.call('publish', ARGV[2], ARGV[3])
"""
_REFRESH = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


@dataclass(frozen=True, slots=True)
class FlightResult:
    """How a flight ended: an entry to serve, an error to repeat, or "try again yourself"."""

    kind: Kind
    entry: CachedEntry | None = None
    status: int = 0
    body: bytes = b""
    late: bool = False  # this follower arrived after the leader had already answered

    @classmethod
    def retry(cls) -> FlightResult:
        """The leader produced nothing shareable (failure worth retrying, or nothing stored)."""
        return cls("retry")


RETRY = FlightResult("retry")


@dataclass(slots=True)
class Leadership:
    """Held by the one request that goes upstream; ``finish`` must be called exactly once."""

    digest: str
    future: asyncio.Future[FlightResult]
    token: str | None = None
    heartbeat: asyncio.Task[None] | None = None
    entry_absent: bool = False  # the store had no entry when the lock was taken
    answered: bool = False  # the leader's client has its answer; only storing is left
    done: bool = field(default=False)


class RedisFlights:
    """The cross-process half: lock, heartbeat, outcome announcements on ``{prefix}:flights``.

    Keys: ``{prefix}:lock:{digest}`` (token, PX lock_ttl) and ``{prefix}:flighterr:{digest}``
    (status + error body for remote followers, 60 s).
    """

    def __init__(self, client: aioredis.Redis, prefix: str, lock_ttl: float) -> None:
        self.client = client
        self.prefix = prefix
        self.lock_ms = max(100, int(lock_ttl * 1000))
        self.channel = f"{prefix}:flights"
        self._waiters: dict[str, list[asyncio.Future[bytes]]] = {}
        self._announce = client.register_script(_ANNOUNCE)  # EVALSHA: the script is sent once
        self._refresh = client.register_script(_REFRESH)
        self._lock = client.register_script(_LOCK)

    def lock_key(self, digest: str) -> str:
        """Redis key of a flight's lock."""
        return f"{self.prefix}:lock:{digest}"

    def error_key(self, digest: str) -> str:
        """Redis key holding a failed flight's error for remote followers."""
        return f"{self.prefix}:flighterr:{digest}"

    async def try_lock(self, digest: str, entry_key: str) -> tuple[str | None, bool]:
        """(token when this process now leads the flight, whether the entry exists right now).

        Taking the lock and checking the entry in one script saves the new leader a second
        lookup: the previous flight may have stored the answer just before we got here.
        """
        token = secrets.token_hex(8)
        state = int(await self._lock(keys=[self.lock_key(digest), entry_key], args=[token, self.lock_ms]))
        return (token if state else None), state == 2

    async def keep_alive(self, digest: str, token: str) -> None:
        """Refresh the lock while the generation runs, so a slow image never looks abandoned."""
        while True:
            await asyncio.sleep(self.lock_ms / 3000)
            with contextlib.suppress(RedisError, OSError):
                await self._refresh(keys=[self.lock_key(digest)], args=[token, self.lock_ms])

    async def announce(self, digest: str, token: str, result: FlightResult) -> None:
        """Publish the outcome and drop the lock (errors first, so followers can read them)."""
        kind = "stored" if result.kind == "entry" else result.kind
        payload = f"{result.status}\n".encode() + result.body if result.kind == "error" else b""
        await self._announce(
            keys=[self.lock_key(digest), self.error_key(digest)],
            args=[token, self.channel, f"{digest} {kind}", payload],
        )

    async def wait(self, digest: str, max_wait: float) -> FlightResult | None:
        """Wait for the remote leader; None when its lock lapsed without an outcome."""
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(digest, []).append(future)
            try:
                pttl = int(await self.client.pttl(self.lock_key(digest)))
                if pttl < 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    kind = await asyncio.wait_for(future, timeout=min(pttl / 1000 + 0.05, 2.0))
                    return await self._result(digest, kind)
            finally:
                waiters = self._waiters.get(digest, [])
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    self._waiters.pop(digest, None)
        return None

    async def _result(self, digest: str, kind: bytes) -> FlightResult:
        if kind == b"error":
            raw = await self.client.get(self.error_key(digest))
            if isinstance(raw, bytes) and raw:
                status, _, body = raw.partition(b"\n")
                return FlightResult("error", status=int(status), body=body)
            return RETRY
        return FlightResult("stored") if kind == b"stored" else RETRY

    async def listen(self) -> None:
        """Dispatch announcements to local waiters; reconnects while Redis is away."""
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        digest, _, kind = bytes(message["data"]).partition(b" ")
                        for future in self._waiters.pop(digest.decode(), []):
                            if not future.done():
                                future.set_result(kind)
            except (RedisError, OSError) as exc:
                log.debug("flight listener reconnecting: %r", exc)
                await asyncio.sleep(1.0)


class SingleFlight:
    """Join or lead the flight for a cache key."""

    def __init__(self, remote: RedisFlights | None, max_wait: float) -> None:
        self.remote = remote
        self.max_wait = max_wait
        self._local: dict[str, Leadership] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def join(
        self, digest: str, entry_key: str, lookup: Callable[[], Awaitable[CachedEntry | None]]
    ) -> Leadership | FlightResult:
        """Either lead (go upstream, then ``finish``) or get the leader's result.

        ``lookup`` re-reads the cache after a remote leader announced it stored the answer.
        """
        deadline = time.monotonic() + self.max_wait
        while True:
            local = self._local.get(digest)
            if local is not None:
                late = local.answered
                result = await asyncio.shield(local.future)
                if result.kind != "retry":
                    # Joined after the leader's client had its answer (only the store was
                    # pending): to this caller that is a plain cache hit.
                    return dataclasses.replace(result, late=late) if late else result
                continue
            future: asyncio.Future[FlightResult] = asyncio.get_running_loop().create_future()
            leadership = Leadership(digest, future)
            self._local[digest] = leadership
            if self.remote is None or time.monotonic() > deadline:
                return leadership
            try:
                outcome = await self._lead_or_follow_remote(leadership, entry_key, lookup, deadline)
            except BaseException:
                self._resolve(leadership, RETRY)
                raise
            if isinstance(outcome, Leadership):
                return outcome
            self._resolve(leadership, outcome)
            if outcome.kind != "retry":
                return outcome

    async def _lead_or_follow_remote(
        self,
        leadership: Leadership,
        entry_key: str,
        lookup: Callable[[], Awaitable[CachedEntry | None]],
        deadline: float,
    ) -> Leadership | FlightResult:
        assert self.remote is not None
        digest = leadership.digest
        try:
            token, entry_exists = await self.remote.try_lock(digest, entry_key)
            if token is not None:
                leadership.token = token
                leadership.entry_absent = not entry_exists
                leadership.heartbeat = asyncio.create_task(self.remote.keep_alive(digest, token))
                return leadership
            result = await self.remote.wait(digest, max(0.0, deadline - time.monotonic()))
        except (RedisError, OSError) as exc:
            log.warning("flight lock unavailable, leading alone: %r", exc)
            return leadership
        if result is not None and result.kind == "error":
            return result
        entry = await lookup()
        return FlightResult("entry", entry) if entry is not None else RETRY

    def _resolve(self, leadership: Leadership, result: FlightResult) -> None:
        if self._local.get(leadership.digest) is leadership:
            del self._local[leadership.digest]
        if not leadership.future.done():
            leadership.future.set_result(result)
        leadership.done = True

    async def finish(self, leadership: Leadership, result: FlightResult) -> None:
        """Hand the outcome to every follower, here and (via Redis) elsewhere."""
        if leadership.done:
            return
        self._resolve(leadership, result)
        if leadership.heartbeat is not None:
            leadership.heartbeat.cancel()
        if self.remote is not None and leadership.token is not None:
            # In the background: local followers already have the result, and the leader's own
            # client need not wait a Redis round trip for other replicas to hear about it.
            self.background(self._announce(leadership.digest, leadership.token, result))

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run flight work after the response (kept referenced, and awaited at shutdown)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _announce(self, digest: str, token: str, result: FlightResult) -> None:
        assert self.remote is not None
        try:
            await self.remote.announce(digest, token, result)
        except (RedisError, OSError) as exc:
            log.warning("could not announce flight outcome: %r", exc)

    async def drain(self) -> None:
        """Wait for background stores and announcements (shutdown must not strand followers)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


@contextlib.asynccontextmanager
async def listening(flights: SingleFlight) -> AsyncIterator[None]:
    """Run the announcement listener for the app's lifetime; flush announcements at the end."""
    remote = flights.remote
    task = asyncio.create_task(remote.listen()) if remote is not None else None
    try:
        yield
    finally:
        await flights.drain()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
