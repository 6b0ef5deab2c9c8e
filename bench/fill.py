"""Filling the cache through the proxy: numbered request bodies and a bounded concurrent writer.

Entry ``i`` of a family is the family's body with ``UNIQUE_MARK`` replaced by ``i``, so the load
generator can later hit a random entry of the family (``LoadSpec.pick``) without a list of keys.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import aiohttp
import orjson

from bench.payloads import HEADERS, IMAGE_MODEL, TEXT_MODEL, UNIQUE_MARK, chat_body

_REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Family:
    """Numbered request bodies; entry ``i`` (1-based) replaces the mark with ``i``."""

    name: str
    template: bytes  # holds UNIQUE_MARK exactly once

    def body(self, index: int) -> bytes:
        """The request body of entry ``index``."""
        return self.template.replace(UNIQUE_MARK.encode(), str(index).encode())

    def bodies(self, first: int, last: int) -> Iterator[bytes]:
        """Entries ``first`` to ``last`` inclusive."""
        return (self.body(i) for i in range(first, last + 1))


def text_family(tag: str) -> Family:
    """Small text entries: one distinct prompt each (the bulk of a real cache)."""
    return Family("text", chat_body(TEXT_MODEL, f"growth {tag} text prompt {UNIQUE_MARK}"))


def image_family(tag: str) -> Family:
    """Image entries that differ only in ``max_tokens``: distinct cache keys (every parameter is in
    the key), while the simulator draws the PNG from the messages alone, so they all share one
    stored blob. Memory per entry then shows the entry's own overhead; a distinct PNG adds
    ~1.007x its size (the matrix's ``redis_memory`` row)."""
    body = {
        "model": IMAGE_MODEL,
        "messages": [{"role": "user", "content": f"growth {tag} image: a lighthouse at dusk"}],
        "max_tokens": UNIQUE_MARK,
    }
    template = orjson.dumps(body).replace(f'"{UNIQUE_MARK}"'.encode(), UNIQUE_MARK.encode())
    return Family("image", template)


def distinct_image_family(tag: str) -> Family:
    """Image entries with one distinct PNG each (the prompt differs): fills the hot tier."""
    return Family("distinct-image", chat_body(IMAGE_MODEL, f"growth {tag} distinct image {UNIQUE_MARK}"))


@dataclass(frozen=True, slots=True)
class FillResult:
    """How writing a batch of entries went."""

    requests: int
    seconds: float
    statuses: dict[int, int]
    x_cache: dict[str, int]
    errors: int

    @property
    def rps(self) -> float:
        """Entries written per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def problems(self) -> list[str]:
        """Anything but a 200 MISS per request."""
        found = []
        if self.errors:
            found.append(f"{self.errors} request errors")
        if set(self.statuses) - {200}:
            found.append(f"statuses {self.statuses}")
        if set(self.x_cache) - {"MISS"}:
            found.append(f"X-Cache {self.x_cache} (expected MISS only)")
        return found


async def fill(url: str, bodies: Iterable[bytes], concurrency: int) -> FillResult:
    """POST every body (each a miss that the proxy stores), ``concurrency`` at a time."""
    pending = iter(bodies)
    statuses: Counter[int] = Counter()
    x_cache: Counter[str] = Counter()
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for body in pending:  # one shared iterator: each body is taken by exactly one worker
            try:
                async with session.post(url, data=body, headers=HEADERS) as response:
                    await response.read()
                    statuses[response.status] += 1
                    x_cache[response.headers.get("X-Cache", "-")] += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return FillResult(
        sum(statuses.values()) + errors, time.monotonic() - started, dict(statuses), dict(x_cache), errors
    )
