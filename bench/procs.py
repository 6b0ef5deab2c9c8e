"""Child processes of the bench (upstream, proxy): start, wait until ready, CPU time, stop.

Each runs in its own process so the one being measured is not sharing an event loop or a GIL
with the load generator or the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web

from bench.machine import ROOT

_TICKS = os.sysconf("SC_CLK_TCK")
_STOP_GRACE_S = 10.0
_READY_S = 30.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; everything after its ')' is space separated.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (worker processes of ``--workers N``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [pid], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants, from /proc/<pid>/stat."""
    total = 0
    for member in descendants(pid):
        fields = _stat_fields(member)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / _TICKS


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The bench's environment for a child, without the caller's ``PROXY_*`` variables: a
    setting in the shell that started the bench must not change what is measured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return {**env, **extra}


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its live descendants (``VmRSS``, /proc/<pid>/status)."""
    total = 0
    for member in descendants(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def serve_child(app: web.Application, host: str, port: int, *, handler_cancellation: bool = False) -> None:
    """Run a bench server (the upstream, the bare references) as the proxy runs: uvloop, no access
    log; returns on SIGINT/SIGTERM."""
    import uvloop  # noqa: PLC0415 - a dependency of the proxy (not on Windows, where none of this runs)

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        handler_cancellation=handler_cancellation,
        shutdown_timeout=1.0,
        print=lambda msg: print(msg, flush=True),
    )


def mib(value: float) -> str:
    """Bytes as MiB, the way the reports print memory."""
    return f"{value / 2**20:,.1f} MiB"


@dataclass(slots=True)
class Child:
    """A started process and where its output goes."""

    name: str
    process: asyncio.subprocess.Process
    log: IO[bytes]
    base: str

    @property
    def pid(self) -> int:
        """Root process id (CPU accounting includes its children)."""
        return self.process.pid


def _open_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("wb")


async def spawn(
    name: str,
    args: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    base: str,
    ready_path: str,
    *,
    program: str = sys.executable,
    cwd: Path | None = None,
    ready_s: float = _READY_S,
) -> Child:
    """Start ``program <args>`` (default: this Python) and wait until ``GET base+ready_path``
    answers 200."""
    log = _open_log(log_path)
    process = await asyncio.create_subprocess_exec(
        program, *args, stdout=log, stderr=asyncio.subprocess.STDOUT, env=dict(env), cwd=cwd
    )
    child = Child(name, process, log, base)
    try:
        await wait_ready(child, ready_path, patience=ready_s)
    except BaseException:
        await stop(child)
        raise
    return child


async def wait_ready(child: Child, path: str, *, patience: float = _READY_S) -> None:
    """Poll until the child answers (at most ``patience`` seconds), failing early (with its log)
    if it exits."""
    timeout = patience
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise RuntimeError(
                    f"{child.name} exited with {child.process.returncode}; see {child.log.name}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(child.base + path) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{child.name} not ready after {timeout}s; see {child.log.name}")


def log_errors(child: Child) -> int:
    """ERROR records the child logged (text log format: ``<date> <time> ERROR ...``)."""
    try:
        lines = Path(child.log.name).read_text(errors="replace").splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if " ERROR " in line)


async def stop(child: Child) -> None:
    """SIGTERM (the proxy forwards it to its workers), then SIGKILL the tree after a grace period."""
    process = child.process
    if process.returncode is None:
        tree = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), _STOP_GRACE_S)
        except TimeoutError:
            for pid in reversed(tree):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await process.wait()
    child.log.close()
