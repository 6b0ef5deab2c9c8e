"""The cross-replica half of single flight: a Redis lock with heartbeat, outcomes on pub/sub.

The leader holds ``SET NX PX`` (refreshed while the generation runs) and announces the outcome on
one channel, but only when a follower on another replica has marked that it waits; followers
wait for that message (no busy polling) or for the lock to lapse, in which case one of them takes
over. On a Redis Cluster the lock, error and waiter keys of a flight share the digest as hash tag
(one slot for each script); the entry key lives elsewhere, so the lock is a plain ``SET NX PX``
there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.flight.results import RETRY, FlightResult
from proxy.storage.base import StoreUnavailable, guarded

log = logging.getLogger(__name__)

# KEYS: lock, entry; ARGV: token, ms. 0: someone else leads; 1: we lead, no entry; 2: we lead, entry.
_LOCK = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1 + redis.call('exists', KEYS[2])
end
return 0
"""
# A miss in one round trip: the entry record if there is one, else take the lock.
# KEYS: entry, lock; ARGV: token, ms. Returns the record, 1 (we lead) or 0 (someone else does).
_GET_OR_LOCK = """
local record = redis.call('get', KEYS[1])
if record then return record end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# One round trip at the end of every flight: keep the error for remote followers, drop our lock,
# and publish the outcome only if a follower on some replica marked that it waits: most flights
# have none, and every publish costs each replica's listener a message to parse.
# KEYS: lock, error, waiters; ARGV: token, channel, message, error payload ('' for none).
_ANNOUNCE = """
if ARGV[4] ~= '' then redis.call('set', KEYS[2], ARGV[4], 'EX', 60) end
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
if redis.call('del', KEYS[3]) == 1 then return redis.call('publish', ARGV[2], ARGV[3]) end
return 0
"""
# The end of a flight that stored its answer, in the same round trip: the entry record (blobs are
# stored before, see ResponseCache.put), then as _ANNOUNCE. A miss used to cost a SET and then
# this script; folded, the leader's store and announcement are one script call.
# KEYS: entry, lock, waiters; ARGV: record, ttl seconds, token, channel, message.
_STORE_AND_ANNOUNCE = """
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('get', KEYS[2]) == ARGV[3] then redis.call('del', KEYS[2]) end
if redis.call('del', KEYS[3]) == 1 then return redis.call('publish', ARGV[4], ARGV[5]) end
return 0
"""
# A remote follower: the lock's remaining ms (negative: no flight) and, while there is one, a
# marker that someone waits. Atomic with _ANNOUNCE: either the marker is seen and the outcome
# published, or the lock is already gone and the follower reads the cache instead.
# KEYS: lock, waiters; ARGV: extra ms the marker outlives the lock.
_WAIT = """
local ms = redis.call('pttl', KEYS[1])
if ms > 0 then redis.call('set', KEYS[2], '1', 'PX', ms + tonumber(ARGV[1])) end
return ms
"""
# How long a waiter marker outlives the lock it was set under (heartbeats extend the lock; each
# follower re-marks at least every 2 s).
_WAITER_GRACE_MS = 5000
_REFRESH = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class RedisFlights:
    """The cross-process half: lock, heartbeat, outcome announcements on ``{prefix}:flights``.

    Keys: ``<prefix>:lock:{<digest>}`` (token, PX lock_ttl) and ``<prefix>:flighterr:{<digest>}``
    (status + error body for remote followers, 60 s); the braces are literal, a Cluster hash tag.
    ``subscriber`` makes the client the listener subscribes with (default: ``client`` itself).
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        prefix: str,
        lock_ttl: float,
        subscriber: Callable[[], aioredis.Redis] | None = None,
        op_timeout: float = 1.0,
    ) -> None:
        self.client = client
        # Every call is bounded: the scripting client has no socket timeout of its own, and a
        # reply that never comes must not hold a request, a background task or shutdown.
        self.op_timeout = op_timeout
        self.cluster = isinstance(client, RedisCluster)
        self.subscriber = subscriber
        self.prefix = prefix
        self.lock_ms = max(100, int(lock_ttl * 1000))
        self.channel = f"{prefix}:flights"
        self._waiters: dict[str, list[asyncio.Future[bytes]]] = {}
        self._announce = client.register_script(_ANNOUNCE)  # EVALSHA: the script is sent once
        self._store_and_announce = client.register_script(_STORE_AND_ANNOUNCE)
        self._wait = client.register_script(_WAIT)
        self._refresh = client.register_script(_REFRESH)
        self._lock = client.register_script(_LOCK)
        self._get_or_lock = client.register_script(_GET_OR_LOCK)
        self._unlock = client.register_script(_UNLOCK)

    def lock_key(self, digest: str) -> str:
        """Redis key of a flight's lock."""
        return f"{self.prefix}:lock:{{{digest}}}"

    def waiters_key(self, digest: str) -> str:
        """Redis key marking that a follower on some replica waits for this flight's outcome."""
        return f"{self.prefix}:waiters:{{{digest}}}"

    def error_key(self, digest: str) -> str:
        """Redis key holding a failed flight's error for remote followers."""
        return f"{self.prefix}:flighterr:{{{digest}}}"

    async def try_lock(self, digest: str, entry_key: str) -> tuple[str | None, bool]:
        """(token when this process now leads the flight, whether the entry exists right now).

        Taking the lock and checking the entry in one script saves the new leader a second
        lookup: the previous flight may have stored the answer just before we got here. On a
        Cluster the entry is in another slot: the lock alone, and the leader re-reads the cache.
        """
        token = secrets.token_hex(8)
        if self.cluster:
            async with guarded("flight", self.op_timeout):
                taken = await self.client.set(self.lock_key(digest), token, nx=True, px=self.lock_ms)
            return (token if taken else None), False
        async with guarded("flight", self.op_timeout):
            state = int(await self._lock(keys=[self.lock_key(digest), entry_key], args=[token, self.lock_ms]))
        return (token if state else None), state == 2

    async def get_or_lock(self, digest: str, entry_key: str) -> tuple[bytes | None, str | None]:
        """(the entry record, or None and our lock token if we now lead the flight).

        Plain Redis only: on a Cluster the entry and the lock live in different slots.
        """
        token = secrets.token_hex(8)
        reply = await self._get_or_lock(keys=[entry_key, self.lock_key(digest)], args=[token, self.lock_ms])
        if isinstance(reply, bytes):
            return reply, None
        return None, (token if int(reply) == 1 else None)

    async def unlock(self, digest: str, token: str) -> None:
        """Drop a lock we hold without announcing anything."""
        async with guarded("flight", self.op_timeout):
            await self._unlock(keys=[self.lock_key(digest)], args=[token])

    @property
    def refresh_every(self) -> float:
        """Seconds between two refreshes of a held lock (a third of its lifetime)."""
        return self.lock_ms / 3000

    async def keep_alive(self, digest: str, token: str) -> None:
        """Refresh the lock now and then every ``refresh_every`` while the generation runs, so a
        slow image never looks abandoned (started when the first refresh is due)."""
        while True:
            with contextlib.suppress(StoreUnavailable):
                async with guarded("flight", self.op_timeout):
                    await self._refresh(keys=[self.lock_key(digest)], args=[token, self.lock_ms])
            await asyncio.sleep(self.refresh_every)

    async def announce(self, digest: str, token: str, result: FlightResult) -> None:
        """Publish the outcome and drop the lock (errors first, so followers can read them)."""
        kind = "stored" if result.kind == "entry" else result.kind
        payload = f"{result.status}\n".encode() + result.body if result.kind == "error" else b""
        async with guarded("flight", self.op_timeout):
            await self._announce(
                keys=[self.lock_key(digest), self.error_key(digest), self.waiters_key(digest)],
                args=[token, self.channel, f"{digest} {kind}", payload],
            )

    async def store_and_announce(
        self, digest: str, token: str, entry_key: str, record: bytes, ttl: int
    ) -> None:
        """Store the entry record (``SET EX``), drop our lock and announce "stored", in one script.

        Plain Redis only: on a Cluster the entry and the lock live in different slots.
        """
        async with guarded("flight", self.op_timeout):
            await self._store_and_announce(
                keys=[entry_key, self.lock_key(digest), self.waiters_key(digest)],
                args=[record, ttl, token, self.channel, f"{digest} stored"],
            )

    async def wait(self, digest: str, max_wait: float) -> FlightResult | None:
        """Wait for the remote leader; None when its lock lapsed without an outcome."""
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(digest, []).append(future)
            try:
                async with guarded("flight", self.op_timeout):
                    pttl = int(
                        await self._wait(
                            keys=[self.lock_key(digest), self.waiters_key(digest)], args=[_WAITER_GRACE_MS]
                        )
                    )
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
            async with guarded("flight", self.op_timeout):
                raw = await self.client.get(self.error_key(digest))
            if isinstance(raw, bytes) and raw:
                status, _, body = raw.partition(b"\n")
                return FlightResult("error", status=int(status), body=body)
            return RETRY
        return FlightResult("stored") if kind == b"stored" else RETRY

    async def listen(self) -> None:
        """Dispatch announcements to local waiters; reconnects while Redis is away."""
        while True:
            client = self.subscriber() if self.subscriber is not None else self.client
            try:
                async with guarded("flight listener", None), client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        digest, _, kind = bytes(message["data"]).partition(b" ")
                        for future in self._waiters.pop(digest.decode(), []):
                            if not future.done():
                                future.set_result(kind)
            except StoreUnavailable as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # redis-py can surface our cancellation as a ConnectionError (seen with 8.1 when
                    # the app stops right after starting): reconnecting would never let shutdown end.
                    raise asyncio.CancelledError from exc
                log.debug("flight listener reconnecting: %r", exc.__cause__)
                await asyncio.sleep(1.0)
            finally:
                if client is not self.client:
                    await client.aclose()
