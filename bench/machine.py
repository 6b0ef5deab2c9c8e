"""The machine and software versions a result was measured on (numbers mean little without them)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _mem_total() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _command(*args: str) -> str:
    """First line a command prints (stdout or stderr), '' when it is not available."""
    if not shutil.which(args[0]):
        return ""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""


def machine_info(redis_server: str, generator: str) -> dict[str, str]:
    """Ordered facts for the report header."""
    commit = _command("git", "rev-parse", "--short", "HEAD")
    dirty = _command("git", "status", "--porcelain", "--untracked-files=no")
    return {
        "CPU": _cpu_model(),
        "cores (os.cpu_count)": str(os.cpu_count()),
        "memory": _mem_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "redis-py": _version("redis"),
        "uvloop": _version("uvloop"),
        "orjson": _version("orjson"),
        "redis-server": redis_server or "not used",
        "load generator": _command("wrk", "-v") if generator == "wrk" else "bench.loadgen (aiohttp client)",
        "proxy commit": (commit + (" + uncommitted changes" if dirty else "")) if commit else "unknown",
        # The bench's own commits move HEAD; this names the code actually measured.
        "proxy/ last changed in": _command("git", "log", "-1", "--format=%h %s", "--", "proxy")[:80]
        or "unknown",
    }


def loadavg() -> str:
    """Other work on the machine skews every number; the report shows how busy it was."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
