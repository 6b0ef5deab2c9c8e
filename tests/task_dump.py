"""What an event loop is still waiting for: used to turn a hung shutdown into a readable failure."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable


def describe_tasks(tasks: Iterable[asyncio.Task[object]]) -> str:
    """Each task with its stack, one after the other."""
    out = io.StringIO()
    for task in tasks:
        out.write(f"* {task!r}\n")
        task.print_stack(limit=25, file=out)
    return out.getvalue()


def pending_tasks() -> str:
    """Every unfinished task of the running loop but the caller's, each with its stack."""
    current = asyncio.current_task()
    return describe_tasks(task for task in asyncio.all_tasks() if task is not current) or "(none)"
