"""What an event loop is still waiting for: used to turn a hung shutdown into a readable failure."""

from __future__ import annotations

import asyncio
import io


def pending_tasks() -> str:
    """Every unfinished task of the running loop but the caller's, each with its stack."""
    out = io.StringIO()
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is current:
            continue
        out.write(f"* {task!r}\n")
        task.print_stack(limit=25, file=out)
    return out.getvalue() or "(none)"
