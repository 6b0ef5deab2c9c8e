"""Background work that outlives a request: kept referenced, logged if it fails, and bounded at
shutdown (drained for a while, then cancelled)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    """Tasks started with ``start`` until they end; ``what`` names them in log lines."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # Every expected failure is handled inside the work; anything else is logged here rather
        # than as "Task exception was never retrieved" whenever the task is collected.
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("%s failed", self.what, exc_info=error)

    async def drain(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for every task (also ones started meanwhile); whether all ended."""
        deadline = time.monotonic() + seconds
        while self._tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=left)
        return True

    async def abandon(self, seconds: float) -> None:
        """Cancel what still runs (at shutdown, after ``drain``): every step of the work is bounded,
        so this only happens when a store stalls, and must not hold the process."""
        pending = set(self._tasks)
        if not pending:
            return
        log.warning("shutdown: cancelling %d %s that did not finish", len(pending), self.what)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=seconds)

    def __len__(self) -> int:
        return len(self._tasks)


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
