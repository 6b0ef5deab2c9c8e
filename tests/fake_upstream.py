"""The simulated upstream on a free local port, for tests that need a real OpenAI-like server.

Use `async with FakeUpstream() as upstream:` directly, or register the fixture in conftest.py:

    from tests.fake_upstream import fake_upstream_fixture
    fake_upstream = pytest.fixture(fake_upstream_fixture)

Tests then take `fake_upstream: FakeUpstream` and flip `fake_upstream.state` knobs at run time.
`png_of(data_url)` and `assert_valid_png(png)` check images that went through the proxy.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import AsyncIterator
from types import TracebackType

from aiohttp import web

from proxy.sim.png import PNG_SIGNATURE
from proxy.sim.simulator import SimulatorState, start_simulator


class FakeUpstream:
    """A running simulator: `.url` is the base URL ending in /v1, `.state` its live knobs."""

    def __init__(self, state: SimulatorState | None = None) -> None:
        self.state = state if state is not None else SimulatorState()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Base URL ending in /v1, as an OpenAI client's `base_url`."""
        if self._url is None:
            raise RuntimeError("FakeUpstream is not started; use `async with`")
        return self._url

    @property
    def chat_calls(self) -> int:
        """How many chat completion requests reached the upstream."""
        return self.state.calls["chat"]

    async def __aenter__(self) -> FakeUpstream:
        self._runner, self._url = await start_simulator(self.state)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.state.hang = False  # release hung handlers so shutdown is quick
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def fake_upstream_fixture() -> AsyncIterator[FakeUpstream]:
    """Fixture body: a started FakeUpstream, stopped after the test."""
    async with FakeUpstream() as upstream:
        yield upstream


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, data) chunks, asserting signature and every CRC."""
    assert png[:8] == PNG_SIGNATURE
    chunks, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        data = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + data), kind
        chunks.append((kind, data))
        offset += 12 + length
    return chunks


def assert_valid_png(png: bytes) -> tuple[int, int]:
    """Structural PNG check; returns (width, height)."""
    chunks = png_chunks(png)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR"
    assert kinds[-1] == b"IEND"
    assert b"IDAT" in kinds
    width, height, depth, color, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color) == (8, 2)
    raw = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    return width, height


def png_of(data_url: str) -> bytes:
    """The PNG bytes inside a `data:image/png;base64,` URL (strict base64)."""
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return base64.b64decode(data_url[len(prefix) :], validate=True)
