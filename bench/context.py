"""What every scenario gets: run options, the target under load, and a handle on the upstream."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bench.payloads import HEADERS

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class Options:
    """Knobs of one bench run."""

    duration: float
    concurrency: int
    generator: str
    run_id: str
    miss_samples: int
    image_bytes: int = 1_500_000
    pairs: int = 5  # reference/proxy load runs alternated where a target compares them
    pair_duration: float = 3.0  # seconds of each of those runs


@dataclass(frozen=True, slots=True)
class Target:
    """Where load goes: the proxy under test, the upstream itself (``direct``) or a bare reference."""

    label: str
    base: str  # http://127.0.0.1:PORT
    pid: int  # root process for CPU accounting
    workers: int = 1
    store: str = "-"
    hot_cache: bool = True
    path: str = CHAT_PATH  # a bare reference answers on its own route (bench.bare)
    is_proxy: bool = True

    @property
    def chat_url(self) -> str:
        """Where the chat requests go."""
        return self.base + self.path


@dataclass(frozen=True, slots=True)
class Reply:
    """A response read to the end, timed from send to last byte."""

    status: int
    x_cache: str
    body: bytes
    seconds: float


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> Reply:
    """POST a chat body with the bench's bearer and read the whole answer."""
    started = time.perf_counter()
    async with session.post(url, data=body, headers=HEADERS) as response:
        data = await response.read()
        return Reply(
            response.status, response.headers.get("X-Cache", ""), data, time.perf_counter() - started
        )


class UpstreamControl:
    """The bench routes of ``bench.upstream``: call counters and latency knobs."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def stats(self) -> dict[str, Any]:
        """Counters and current knobs."""
        async with self.session.get(self.base + "/_stats") as response:
            response.raise_for_status()
            data: dict[str, Any] = orjson.loads(await response.read())
            return data

    async def chat_calls(self) -> int:
        """Chat completions the upstream has answered so far."""
        return await self.calls("chat")

    async def calls(self, route: str) -> int:
        """Calls of one simulator route so far ("chat", "images", ...)."""
        return int((await self.stats())["calls"].get(route, 0))

    async def configure(self, **knobs: float) -> None:
        """Set ``latency_s`` / ``image_latency_s``."""
        async with self.session.post(self.base + "/_config", data=orjson.dumps(knobs)) as response:
            response.raise_for_status()
