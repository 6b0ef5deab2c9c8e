"""Clients that go away mid-answer: no errors logged, no crash, the proxy keeps serving."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer

BODY = {
    "model": "gemini-2.5-flash-image-preview",
    "messages": [{"role": "user", "content": "leave early"}],
    "stream": True,
}
AUTH = {"Authorization": "Bearer sk-leaver"}


async def test_client_leaving_a_replayed_stream_is_not_an_error(
    fake_upstream: FakeUpstream, proxy: ProxyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A streamed hit whose client hangs up after the first bytes logs no error; the next hit works."""
    fake_upstream.state.image_bytes = 12_000_000  # more than the socket buffers hold
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{proxy.url}/chat/completions", json=BODY, headers=AUTH) as resp:
            await resp.read()
            assert resp.headers["X-Cache"] == "MISS"
        with caplog.at_level(logging.WARNING, logger="proxy"):
            for _ in range(5):
                async with session.post(f"{proxy.url}/chat/completions", json=BODY, headers=AUTH) as resp:
                    assert resp.headers["X-Cache"] == "HIT"
                    await resp.content.read(100)
                    resp.close()  # hang up with most of the image unsent
        async with session.post(f"{proxy.url}/chat/completions", json=BODY, headers=AUTH) as resp:
            text = await resp.text()
            assert resp.headers["X-Cache"] == "HIT"
            assert text.endswith("data: [DONE]\n\n")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert fake_upstream.chat_calls == 1
