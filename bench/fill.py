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
    """How writing a batch of entries went.

    A request the proxy did not store (``X-Cache: BYPASS`` when a Redis call outlived the store
    timeout, an error) is sent again, up to ``_ATTEMPTS`` times in all, so the cache ends up
    with exactly the entries asked for; ``first_pass`` keeps what the first attempt saw.
    """

    requests: int
    seconds: float
    first_pass: dict[str, int]  # "200 MISS": n, "200 BYPASS": n, "error": n
    unstored: int  # still not stored after every attempt

    @property
    def rps(self) -> float:
        """Entries written per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def retried(self) -> dict[str, int]:
        """First-pass outcomes other than a stored miss."""
        return {k: v for k, v in self.first_pass.items() if k != _STORED}

    @property
    def problems(self) -> list[str]:
        """Entries that could not be stored at all."""
        if not self.unstored:
            return []
        return [
            f"{self.unstored} entries not stored after {_ATTEMPTS} attempts (first pass {self.first_pass})"
        ]


_STORED = "200 MISS"
_ATTEMPTS = 3


async def _post_all(
    url: str, bodies: Iterable[bytes], concurrency: int, outcomes: Counter[str]
) -> list[bytes]:
    """POST every body, ``concurrency`` at a time; the bodies whose answer was not a stored miss."""
    pending = iter(bodies)
    failed: list[bytes] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in pending:  # one shared iterator: each body is taken by exactly one worker
            try:
                async with session.post(url, data=body, headers=HEADERS) as response:
                    await response.read()
                    outcome = f"{response.status} {response.headers.get('X-Cache', '-')}"
            except (aiohttp.ClientError, TimeoutError):
                outcome = "error"
            outcomes[outcome] += 1
            if outcome != _STORED:
                failed.append(body)

    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed


async def fill(url: str, bodies: Iterable[bytes], concurrency: int) -> FillResult:
    """Write every body as a miss the proxy stores, ``concurrency`` at a time (see FillResult)."""
    started = time.monotonic()
    first: Counter[str] = Counter()
    failed = await _post_all(url, bodies, concurrency, first)
    for _ in range(_ATTEMPTS - 1):
        if not failed:
            break
        failed = await _post_all(url, failed, concurrency, Counter())
    return FillResult(sum(first.values()), time.monotonic() - started, dict(first), len(failed))
