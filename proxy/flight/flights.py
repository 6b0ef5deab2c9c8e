"""Single flight: identical concurrent misses make one upstream call, in one process and across many.

In-process, followers await the leader's future; across processes ``flights_redis`` adds a Redis
lock and announcements. If the Redis side fails, a process simply leads alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from proxy.cache.entry import CachedEntry
from proxy.flight.redis import RedisFlights
from proxy.flight.results import RETRY, Claim, FlightResult, Leadership
from proxy.storage.base import StoreUnavailable, guarded
from proxy.util.tasks import TaskSet, cancel_and_wait

log = logging.getLogger(__name__)

__all__ = ["RETRY", "Claim", "FlightResult", "Leadership", "RedisFlights", "SingleFlight", "listening"]


class SingleFlight:
    """Join or lead the flight for a cache key."""

    def __init__(self, remote: RedisFlights | None, max_wait: float, store_timeout: float = 0.25) -> None:
        self.remote = remote
        self.max_wait = max_wait
        self.store_timeout = store_timeout
        self._local: dict[str, Leadership] = {}
        # Lock releases and outcome announcements still on their way to Redis (stores in
        # progress are the cache's: ``ResponseCache.writes``).
        self.announcements = TaskSet("flight announcement(s)")

    @property
    def claims(self) -> bool:
        """Whether ``claim`` can read an entry record and take the lock in one round trip (plain
        Redis only: on a Cluster the record and the lock live in different slots)."""
        return self.remote is not None and not self.remote.cluster

    async def claim(self, digest: str, entry_key: str) -> Claim:
        """The entry record under ``entry_key``, or the flight's lock when there is none, in one
        round trip (raises StoreUnavailable). Only a caller that will ``join`` on a miss may claim."""
        assert self.remote is not None
        async with guarded("GET", self.store_timeout):
            record, token = await self.remote.get_or_lock(digest, entry_key)
        return Claim(record, token)

    async def join(
        self,
        digest: str,
        entry_key: str,
        lookup: Callable[[], Awaitable[CachedEntry | None]],
        token: str | None = None,
    ) -> Leadership | FlightResult:
        """Either lead (go upstream, then ``finish``) or get the leader's result.

        ``lookup`` re-reads the cache after a remote leader announced it stored the answer;
        ``token`` is a lock ``claim`` already took.
        """
        deadline = time.monotonic() + self.max_wait
        while True:
            local = self._local.get(digest)
            if local is not None:
                if token is not None:  # a local leader without the lock (it led alone): let it go
                    self.announcements.start(self._unlock(digest, token))
                    token = None
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
            if token is not None and self.remote is not None:
                leadership.token, leadership.entry_absent = token, True
                self._heartbeat(leadership, self.remote, token)
                return leadership
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
                self._heartbeat(leadership, self.remote, token)
                return leadership
            result = await self.remote.wait(digest, max(0.0, deadline - time.monotonic()))
        except StoreUnavailable as exc:
            log.warning("flight lock unavailable, leading alone: %r", exc)
            return leadership
        if result is not None and result.kind == "error":
            return result
        entry = await lookup()
        return FlightResult("entry", entry) if entry is not None else RETRY

    @staticmethod
    def _heartbeat(leadership: Leadership, remote: RedisFlights, token: str) -> None:
        """Keep the lock alive from its first due refresh on. Most flights end long before: a timer
        is all they cost (a task per miss, started and cancelled, was measurable on the miss path)."""

        def start() -> None:
            if not leadership.done:
                leadership.heartbeat = asyncio.create_task(remote.keep_alive(leadership.digest, token))

        leadership.heartbeat = asyncio.get_running_loop().call_later(remote.refresh_every, start)

    def _resolve(self, leadership: Leadership, result: FlightResult, *, keep: bool = False) -> None:
        if not keep:
            self._forget(leadership)
        if not leadership.future.done():
            leadership.future.set_result(result)
        leadership.done = True

    def record_writer(self, leadership: Leadership) -> Callable[[str, bytes, int], Awaitable[None]] | None:
        """How the leader's entry record is best written: with the flight's end, in one script
        (``RedisFlights.store_and_announce``), when this leader holds a Redis lock on plain Redis;
        None otherwise (the cache writes it itself, ``finish`` announces after).

        The writer raises StoreUnavailable like a store write; once it returns, the record is
        stored, the lock dropped and the outcome published: ``finish`` only tells local followers.
        """
        remote, token = self.remote, leadership.token
        if remote is None or remote.cluster or token is None:
            return None

        async def write(key: str, record: bytes, ttl: int) -> None:
            await remote.store_and_announce(leadership.digest, token, key, record, ttl)
            leadership.announced = True

        return write

    async def finish(self, leadership: Leadership, result: FlightResult) -> None:
        """Hand the outcome to every follower, here and (via Redis) elsewhere."""
        if leadership.done:
            return
        announcing = self.remote is not None and leadership.token is not None and not leadership.announced
        # Until the lock is dropped, a newcomer here would find it taken and wait for our own
        # announcement: let it join the finished flight instead (a late joiner, i.e. a hit).
        self._resolve(leadership, result, keep=announcing and result.kind != "retry")
        if leadership.heartbeat is not None:
            leadership.heartbeat.cancel()
        if announcing:
            # In the background: local followers already have the result, and the leader's own
            # client need not wait a Redis round trip for other replicas to hear about it.
            self.announcements.start(self._announce(leadership, result))

    def _forget(self, leadership: Leadership) -> None:
        if self._local.get(leadership.digest) is leadership:
            del self._local[leadership.digest]

    async def _announce(self, leadership: Leadership, result: FlightResult) -> None:
        assert self.remote is not None
        assert leadership.token is not None
        try:
            await self.remote.announce(leadership.digest, leadership.token, result)
        except StoreUnavailable as exc:
            log.warning("could not announce flight outcome: %r", exc)
        finally:
            self._forget(leadership)

    async def _unlock(self, digest: str, token: str) -> None:
        assert self.remote is not None
        with contextlib.suppress(StoreUnavailable):
            await self.remote.unlock(digest, token)


@contextlib.asynccontextmanager
async def listening(flights: SingleFlight, grace: float) -> AsyncIterator[None]:
    """Run the announcement listener for the app's lifetime; flush announcements at the end,
    waiting at most ``grace`` seconds so shutdown is bounded even when Redis is not."""
    remote = flights.remote
    task = asyncio.create_task(remote.listen()) if remote is not None else None
    try:
        yield
    finally:
        if not await flights.announcements.drain(grace):
            await flights.announcements.abandon(1.0)
        if task is not None:
            if not await cancel_and_wait(task, max(1.0, grace)):
                log.warning("shutdown: the flight listener did not stop within %.1f s", max(1.0, grace))
            elif not task.cancelled() and (error := task.exception()) is not None:
                log.warning("the flight listener had failed: %r", error)
