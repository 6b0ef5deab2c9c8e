"""One load run against one URL: wrk when installed, else the aiohttp client in ``bench.loadgen``.

Both generators run closed-loop in a separate process and report the same fields, so the
scenarios do not care which one ran (the report says which).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.payloads import UNIQUE_MARK

_LUA_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"generator":"wrk","requests":%d,"duration_s":%f,"bytes":%d,"errors":%d,' ..
    '"non2xx":%d,"p50_us":%f,"p90_us":%f,"p99_us":%f,"mean_us":%f,"max_us":%f}\n',
    summary.requests, summary.duration / 1e6, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""

_LUA_UNIQUE = r"""
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, body_prefix .. tid .. "-" .. counter .. body_suffix)
end
"""

_LUA_PICK = r"""
function setup(thread)
  thread:set("seed", math.random(1, 2147483647))
end
function init(args)
  math.randomseed(seed)
end
request = function()
  return wrk.format(nil, nil, nil, body_prefix .. math.random(1, pick) .. body_suffix)
end
"""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send, how hard and for how long."""

    url: str
    body: bytes
    headers: Mapping[str, str]
    duration: float
    concurrency: int
    threads: int = 1
    unique: bool = False  # replace UNIQUE_MARK in the body with a per-request counter
    pick: int = 0  # > 0: replace UNIQUE_MARK with a random 1..pick per request (hits over a key set)
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A load run's summary; latencies in milliseconds."""

    generator: str
    requests: int
    duration_s: float
    bytes: int
    errors: int
    non2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @classmethod
    def from_report(cls, data: Mapping[str, Any]) -> LoadResult:
        """From a generator's BENCHJSON line (latencies in microseconds)."""
        return cls(
            generator=str(data["generator"]),
            requests=int(data["requests"]),
            duration_s=float(data["duration_s"]),
            bytes=int(data["bytes"]),
            errors=int(data["errors"]),
            non2xx=int(data["non2xx"]),
            **{
                f"{name}_ms": float(data[f"{name}_us"]) / 1000
                for name in ("p50", "p90", "p99", "mean", "max")
            },
        )


def pick_generator(requested: str) -> str:
    """``wrk`` when asked for (or ``auto``) and installed, else ``aiohttp``."""
    if requested == "aiohttp":
        return "aiohttp"
    if shutil.which("wrk"):
        return "wrk"
    if requested == "wrk":
        raise SystemExit("bench: --loadgen wrk asked for but wrk is not installed (apt-get install wrk)")
    return "aiohttp"


def _lua_string(value: str) -> str:
    assert "]==]" not in value
    return f"[==[{value}]==]"


def wrk_script(spec: LoadSpec) -> str:
    """The Lua script wrk needs for a POST with a JSON body and an Authorization header."""
    lines = ['wrk.method = "POST"']
    lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in spec.headers.items()]
    body = spec.body.decode()
    if spec.unique or spec.pick:
        prefix, _, suffix = body.partition(UNIQUE_MARK)
        lines += [f"body_prefix = {_lua_string(prefix)}", f"body_suffix = {_lua_string(suffix)}"]
        lines.append(f"wrk.body = {_lua_string(prefix + '1' + suffix)}")
        lines += [f"pick = {spec.pick}", _LUA_PICK] if spec.pick else [_LUA_UNIQUE]
    else:
        lines.append(f"wrk.body = {_lua_string(body)}")
    lines.append(_LUA_DONE)
    return "\n".join(lines)


async def _collect(*args: str, stdin: bytes | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin)
    text = out.decode(errors="replace")
    if process.returncode != 0 or "BENCHJSON " not in text:
        raise RuntimeError(f"{args[0]} failed ({process.returncode}): {text[-500:]} {err.decode()[-500:]}")
    return text


def _parse(text: str) -> LoadResult:
    line = next(ln for ln in text.splitlines() if ln.startswith("BENCHJSON "))
    return LoadResult.from_report(orjson.loads(line.removeprefix("BENCHJSON ")))


async def run_load(spec: LoadSpec, generator: str) -> LoadResult:
    """Run the load to completion (bounded by ``spec.duration``) and return its summary."""
    if generator == "wrk":
        with tempfile.TemporaryDirectory(prefix="lcp-bench-") as tmp:
            script = Path(tmp) / "post.lua"
            script.write_text(wrk_script(spec))
            seconds = max(1, math.ceil(spec.duration))
            text = await _collect(
                "wrk",
                f"-t{max(1, min(spec.threads, spec.concurrency))}",
                f"-c{spec.concurrency}",
                f"-d{seconds}s",
                f"--timeout={math.ceil(spec.timeout)}s",
                "-s",
                str(script),
                spec.url,
            )
        return _parse(text)
    payload = {
        "url": spec.url,
        "body": spec.body.decode(),
        "headers": dict(spec.headers),
        "duration": spec.duration,
        "concurrency": spec.concurrency,
        "unique": spec.unique,
        "pick": spec.pick,
        "mark": UNIQUE_MARK,
        "timeout": spec.timeout,
    }
    # On stdin, not argv: a vision-edit body (~2 MB) is far beyond one argument's 128 KiB limit.
    text = await _collect(sys.executable, "-m", "bench.loadgen", stdin=orjson.dumps(payload))
    return _parse(text)
