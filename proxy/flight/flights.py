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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from proxy.cache.response import CachedEntry
from proxy.flight.redis import RedisFlights
from proxy.flight.results import RETRY, FlightResult, Leadership, LockTicket
from proxy.storage.base import REDIS_FAILURES, guarded

log = logging.getLogger(__name__)

__all__ = ["RETRY", "FlightResult", "Leadership", "LockTicket", "RedisFlights", "SingleFlight", "listening"]


class SingleFlight:
    """Join or lead the flight for a cache key."""

    def __init__(self, remote: RedisFlights | None, max_wait: float, store_timeout: float = 0.25) -> None:
        self.remote = remote
        self.max_wait = max_wait
        self.store_timeout = store_timeout
        self._local: dict[str, Leadership] = {}
        self._background: set[asyncio.Task[None]] = set()

    def fetcher(self, digest: str, ticket: LockTicket) -> Callable[[str], Awaitable[bytes | None]] | None:
        """A cache-record reader that also takes the flight's Redis lock when there is no record.

        A miss then costs one round trip instead of two (read, then lock); ``join`` picks the lock
        up from ``ticket``. Only the caller that will ``join`` may use it. Plain Redis only: on a
        Cluster the record and the lock live in different slots.
        """
        remote = self.remote
        if remote is None or remote.cluster:
            return None

        async def fetch(key: str) -> bytes | None:
            async with guarded("GET", self.store_timeout):
                record, ticket.token = await remote.get_or_lock(digest, key)
            return record

        return fetch

    async def join(
        self,
        digest: str,
        entry_key: str,
        lookup: Callable[[], Awaitable[CachedEntry | None]],
        ticket: LockTicket | None = None,
    ) -> Leadership | FlightResult:
        """Either lead (go upstream, then ``finish``) or get the leader's result.

        ``lookup`` re-reads the cache after a remote leader announced it stored the answer;
        ``ticket`` carries a lock already taken by ``fetcher``.
        """
        deadline = time.monotonic() + self.max_wait
        token = ticket.token if ticket is not None else None
        while True:
            local = self._local.get(digest)
            if local is not None:
                if token is not None:  # a local leader without the lock (it led alone): let it go
                    self.background(self._unlock(digest, token))
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
                leadership.heartbeat = asyncio.create_task(self.remote.keep_alive(digest, token))
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
                leadership.heartbeat = asyncio.create_task(self.remote.keep_alive(digest, token))
                return leadership
            result = await self.remote.wait(digest, max(0.0, deadline - time.monotonic()))
        except REDIS_FAILURES as exc:
            log.warning("flight lock unavailable, leading alone: %r", exc)
            return leadership
        if result is not None and result.kind == "error":
            return result
        entry = await lookup()
        return FlightResult("entry", entry) if entry is not None else RETRY

    def _resolve(self, leadership: Leadership, result: FlightResult, *, keep: bool = False) -> None:
        if not keep:
            self._forget(leadership)
        if not leadership.future.done():
            leadership.future.set_result(result)
        leadership.done = True

    async def finish(self, leadership: Leadership, result: FlightResult) -> None:
        """Hand the outcome to every follower, here and (via Redis) elsewhere."""
        if leadership.done:
            return
        announcing = self.remote is not None and leadership.token is not None
        # Until the lock is dropped, a newcomer here would find it taken and wait for our own
        # announcement: let it join the finished flight instead (a late joiner, i.e. a hit).
        self._resolve(leadership, result, keep=announcing and result.kind != "retry")
        if leadership.heartbeat is not None:
            leadership.heartbeat.cancel()
        if announcing:
            # In the background: local followers already have the result, and the leader's own
            # client need not wait a Redis round trip for other replicas to hear about it.
            self.background(self._announce(leadership, result))

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run flight work after the response (kept referenced, and awaited at shutdown)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        # Every expected failure is handled inside the work; anything else is logged here
        # rather than as "Task exception was never retrieved" whenever the task is collected.
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background flight work failed", exc_info=error)

    def _forget(self, leadership: Leadership) -> None:
        if self._local.get(leadership.digest) is leadership:
            del self._local[leadership.digest]

    async def _announce(self, leadership: Leadership, result: FlightResult) -> None:
        assert self.remote is not None
        assert leadership.token is not None
        try:
            await self.remote.announce(leadership.digest, leadership.token, result)
        except REDIS_FAILURES as exc:
            log.warning("could not announce flight outcome: %r", exc)
        finally:
            self._forget(leadership)

    async def _unlock(self, digest: str, token: str) -> None:
        assert self.remote is not None
        with contextlib.suppress(*REDIS_FAILURES):
            await self.remote.unlock(digest, token)

    async def drain(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for background stores and announcements (a purge or a
        shutdown must not strand followers); whether they all finished."""
        deadline = time.monotonic() + seconds
        while self._background:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.wait(set(self._background), timeout=left)
        return True

    async def abandon(self, seconds: float) -> None:
        """Cancel background work still running (at shutdown, after ``drain``): every step of it
        is bounded, so this only happens when Redis stalls, and must not hold the process."""
        pending = set(self._background)
        if not pending:
            return
        log.warning("shutdown: cancelling %d background store(s) that did not finish", len(pending))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=seconds)


@contextlib.asynccontextmanager
async def listening(flights: SingleFlight, grace: float) -> AsyncIterator[None]:
    """Run the announcement listener for the app's lifetime; flush announcements at the end,
    waiting at most ``grace`` seconds so shutdown is bounded even when Redis is not."""
    remote = flights.remote
    task = asyncio.create_task(remote.listen()) if remote is not None else None
    try:
        yield
    finally:
        if not await flights.drain(grace):
            await flights.abandon(1.0)
        if task is not None:
            if not await cancel_and_wait(task, max(1.0, grace)):
                log.warning("shutdown: the flight listener did not stop within %.1f s", max(1.0, grace))
            elif not task.cancelled() and (error := task.exception()) is not None:
                log.warning("the flight listener had failed: %r", error)


async def cancel_and_wait(task: asyncio.Task[Any], seconds: float) -> bool:
    """Cancel ``task`` until it ends, for at most ``seconds``; whether it ended.

    One ``cancel()`` is not always enough: redis-py's connection handshake sends its commands
    through ``asyncio.wait_for``, which on Python 3.11 swallows a cancellation that arrives just as
    the inner call completes (CPython gh-86296, fixed in 3.12). A listener cancelled while it
    (re)connects then carries on reading its subscription forever; cancelling again reaches it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        task.cancel()
        left = deadline - loop.time()
        done, _ = await asyncio.wait({task}, timeout=max(0.0, min(0.1, left)))
        if done:
            return True
        if left <= 0.1:
            return False
