"""A test that runs too long prints what every event loop is waiting for, then pytest-timeout fails it.

faulthandler shows thread stacks, which for a hung asyncio test only says "in epoll". This names
the tasks and their stacks, read from a watchdog thread (best effort: the loop is not paused).
"""

from __future__ import annotations

import asyncio
import gc
import io
import sys
import threading
from collections.abc import Generator

import pytest

from tests.task_dump import describe_tasks

REPORT_AFTER_S = 50.0


def _loops() -> list[asyncio.AbstractEventLoop]:
    return [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed()]


def _report(nodeid: str) -> None:
    out = io.StringIO()
    out.write(f"\n=== {nodeid} still running after {REPORT_AFTER_S:.0f} s; asyncio tasks per loop ===\n")
    for loop in _loops():
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError as exc:  # the task set changed while we read it from this thread
            out.write(f"(could not list tasks: {exc})\n")
            continue
        out.write(f"--- {loop!r}: {len(tasks)} task(s)\n{describe_tasks(tasks)}")
    sys.__stderr__.write(out.getvalue())
    sys.__stderr__.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    timer = threading.Timer(REPORT_AFTER_S, _report, args=(item.nodeid,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
