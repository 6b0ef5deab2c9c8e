"""The hot path, traced: a hot-tier image hit runs code of five packages only (web, pipeline,
cache, keys, obs), never the endpoint's parse (the request was identified before: the flow's
remembered Call, else ``pipeline.memo``), the store, the flight, the upstream or the budget code."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import aiohttp

from proxy.state import PIPELINE
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, proxy_settings

IMAGE_MODEL = "gemini-2.5-flash-image-preview"
BODY = {"model": IMAGE_MODEL, "messages": [{"role": "user", "content": "the hot path"}]}
HEADERS = {"Authorization": "Bearer sk-hot-path"}
# The packages a hot hit may cross: the HTTP layer, the flow (which remembers the body's parse),
# the cache's hot tier and key, who is calling, and the accounting of what the hit saved.
HIT_PACKAGES = {"web", "pipeline", "cache", "keys", "obs"}


# The app's own background loops (named tasks) may wake up during the traced request: not the hit.
BACKGROUND_TASKS = {"store-health", "state-store-guard", "upstream-prices", "console-flush"}


@contextmanager
def traced(modules: dict[str, set[str]]) -> Iterator[None]:
    """Collect, per ``proxy.*`` module, the functions that run (Python frames; C calls are not ours)."""

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            task = asyncio.current_task()
            if task is not None and task.get_name() in BACKGROUND_TASKS:
                return
            name = frame.f_globals.get("__name__", "")
            if name.startswith("proxy."):
                modules.setdefault(name, set()).add(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(None)


async def test_a_hot_image_hit_crosses_five_packages(fake_upstream: FakeUpstream, key_prefix: str) -> None:
    """MISS, HIT (from the store, now hot), then a traced hot HIT of the same bytes: the proxy code
    it runs belongs to web, pipeline, cache, keys and obs; the endpoint (its body was parsed
    before), storage, flight, upstream, budget, config, util and the composition root stay
    untouched (the module list is printed for the report)."""
    fake_upstream.state.image_bytes = 200_000
    async with (
        ProxyServer(proxy_settings(fake_upstream.url, None, key_prefix)) as proxy,
        aiohttp.ClientSession() as session,
    ):
        url = f"{proxy.url}/chat/completions"
        for expected in ("MISS", "HIT"):
            async with session.post(url, json=BODY, headers=HEADERS) as response:
                assert response.headers["X-Cache"] == expected
                first = await response.read()
        modules: dict[str, set[str]] = {}
        with traced(modules):
            async with session.post(url, json=BODY, headers=HEADERS) as response:
                body = await response.read()
    assert response.headers["X-Cache"] == "HIT"
    assert body == first
    assert fake_upstream.chat_calls == 1
    for name in sorted(modules):
        print(f"{name}: {', '.join(sorted(modules[name]))}")
    packages = {name.split(".")[1] for name in modules}
    assert packages == HIT_PACKAGES, sorted(packages)
    assert "proxy.cache.response" in modules  # served by the hot tier...
    # ...for a request identified before: its remembered Call, so no parse (pipeline.memo) and no
    # endpoint code at all...
    assert not any(name.startswith(("proxy.pipeline.memo", "proxy.endpoints")) for name in modules)
    assert not any(name.startswith(("proxy.storage", "proxy.flight")) for name in modules)  # ...no store


async def test_a_remembered_call_never_crosses_callers_namespaces_or_cache_controls(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """The same body again reuses its remembered Call (``Pipeline.identify``) only with the same
    bearer, content type and cache headers: another bearer, an ``X-Cache-Namespace``, ``no-cache``
    or ``no-store`` each get what they would get the first time, and the upstream sees them."""
    text = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "remembered call"}]}
    a, b = {"Authorization": "Bearer sk-caller-a"}, {"Authorization": "Bearer sk-caller-b"}
    steps = [
        (a, "MISS"),
        (a, "HIT"),
        (b, "MISS"),  # another caller: its own namespace, never a's entry
        (b, "HIT"),
        ({**a, "X-Cache-Namespace": "team"}, "MISS"),
        ({**a, "X-Cache-Namespace": "team"}, "HIT"),
        ({**a, "Cache-Control": "no-cache"}, "BYPASS"),  # refreshes the entry
        ({**a, "Cache-Control": "no-store"}, "HIT"),
        (a, "HIT"),
    ]
    async with (
        ProxyServer(proxy_settings(fake_upstream.url, None, key_prefix)) as proxy,
        aiohttp.ClientSession() as session,
    ):
        seen = []
        keys: dict[str, set[str]] = {}
        for headers, _ in steps:
            async with session.post(f"{proxy.url}/chat/completions", json=text, headers=headers) as reply:
                assert reply.status == 200
                seen.append(reply.headers["X-Cache"])
                keys.setdefault(headers["Authorization"], set()).add(reply.headers["X-Cache-Key"])
    assert seen == [expected for _, expected in steps]
    assert fake_upstream.chat_calls == 4  # a, b, a in "team", a's refresh
    assert keys["Bearer sk-caller-a"].isdisjoint(keys["Bearer sk-caller-b"])


async def test_a_call_keyed_by_kilobytes_of_client_headers_is_served_but_not_remembered(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """The remembered Calls are bounded by everything their key holds: a client can make each
    header 8 KiB, so a request whose bearer or cache headers are that long is answered as usual
    (MISS, then HIT) but its Call is not kept; a short one is."""
    text = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "long headers"}]}
    long_bearer = {"Authorization": "Bearer sk-" + "b" * 4000}
    long_control = {"Authorization": "Bearer sk-short", "Cache-Control": "max-age=600, " + "x" * 4000}
    async with (
        ProxyServer(proxy_settings(fake_upstream.url, None, key_prefix)) as proxy,
        aiohttp.ClientSession() as session,
    ):
        calls = proxy.app[PIPELINE]._calls
        for headers in (long_bearer, long_control):
            seen = []
            for _ in range(2):
                async with session.post(f"{proxy.url}/chat/completions", json=text, headers=headers) as reply:
                    assert reply.status == 200
                    seen.append(reply.headers["X-Cache"])
            assert seen == ["MISS", "HIT"]
            assert calls == {}, "a call keyed by kilobytes of client headers was remembered"
        async with session.post(
            f"{proxy.url}/chat/completions", json=text, headers={"Authorization": "Bearer sk-short"}
        ) as reply:
            assert reply.headers["X-Cache"] == "HIT"
        assert len(calls) == 1
