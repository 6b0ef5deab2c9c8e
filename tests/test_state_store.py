"""Key and budget state is never evicted: a guarded state Redis, separate from an evictable cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from proxy.config import Secret
from proxy.state import STATE_GUARD
from tests.budget_processes import Tenant, chat, proxy_env, standing, start_proxy, write_config
from tests.e2e_helpers import IMAGE_MODEL, TEXT_MODEL, chat_raw
from tests.fake_upstream import FakeUpstream, assert_valid_png, png_of
from tests.managed_helpers import metric_value
from tests.proxy_harness import ProxyServer, free_port, proxy_settings
from tests.proxy_process import ProxyProcess
from tests.redis_process import RedisProcess

ADMIN = "admin-token-for-state-tests-0123456789"
CAPPED = Tenant("capped", "sk-lcp-state-capped-secret-00001", budget_usd=1.0)
OPEN = Tenant("open", "sk-lcp-state-open-secret-000002")


@pytest.fixture
def evicting_redis() -> Iterator[RedisProcess]:
    """A private redis-server that evicts: maxmemory 50 MB, allkeys-lru."""
    server = RedisProcess(free_port()).start("--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru")
    yield server
    server.remove()


async def _exit_code(proxy: ProxyProcess, timeout: float = 30.0) -> int:
    assert proxy.proc is not None
    for _ in range(int(timeout / 0.1)):
        if proxy.proc.poll() is not None:
            return proxy.proc.returncode
        await asyncio.sleep(0.1)
    raise AssertionError(f"the proxy kept running:\n{proxy.output()[-2000:]}")


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-random"])
async def test_an_evicting_state_redis_refuses_start(policy: str, tmp_path: Path) -> None:
    """maxmemory with an evicting policy: the process exits non-zero naming the setting and the fix."""
    server = RedisProcess(free_port()).start("--maxmemory", "50mb", "--maxmemory-policy", policy)
    proxy = ProxyProcess(
        {"PROXY_REDIS_URL": server.url, "PROXY_ADMIN_TOKEN": ADMIN, "PROXY_UPSTREAM_PRICES": "false"},
        clean_env=True,
    ).launch()
    try:
        code = await _exit_code(proxy)
        output = proxy.output()
    finally:
        proxy.close()
        server.remove()
    assert code == 3, output
    assert f"maxmemory-policy {policy}" in output
    assert "PROXY_STATE_REDIS_URL" in output
    assert "noeviction" in output
    assert "Traceback" not in output


async def test_an_evicting_cache_redis_is_fine_with_a_separate_state_redis(
    evicting_redis: RedisProcess, redis_url: str, key_prefix: str
) -> None:
    """Cache on an allkeys-lru Redis, state on a noeviction one: the proxy starts, the gauge says 0."""
    env = {
        "PROXY_REDIS_URL": evicting_redis.url,
        "PROXY_STATE_REDIS_URL": redis_url,
        "PROXY_REDIS_PREFIX": key_prefix,
        "PROXY_ADMIN_TOKEN": ADMIN,
        "PROXY_UPSTREAM_PRICES": "false",
    }
    proxy = ProxyProcess(env, clean_env=True).start()
    try:
        text = await _metrics(proxy.base)
    finally:
        proxy.stop()
        proxy.close()
    assert metric_value(text, "llm_proxy_degraded", component="state_store") == 0


async def test_opt_out_and_passthrough_only_start_on_an_evicting_redis(evicting_redis: RedisProcess) -> None:
    """PROXY_ALLOW_EVICTING_STATE_STORE starts (degraded gauge 1); a pure cache (no keys) starts too."""
    base = {"PROXY_REDIS_URL": evicting_redis.url, "PROXY_UPSTREAM_PRICES": "false"}
    opted = ProxyProcess(
        {**base, "PROXY_ADMIN_TOKEN": ADMIN, "PROXY_ALLOW_EVICTING_STATE_STORE": "true"}, clean_env=True
    ).start()
    cache_only = ProxyProcess(base, clean_env=True).start()
    try:
        text = await _metrics(opted.base)
    finally:
        for proxy in (opted, cache_only):
            proxy.stop()
            proxy.close()
    assert metric_value(text, "llm_proxy_degraded", component="state_store") == 1


async def _readyz(base: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/readyz") as response:
        return response.status, await response.json()


async def _metrics(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        return await response.text()


def _static(tenant: Tenant) -> dict[str, object]:
    entry: dict[str, object] = {"id": tenant.id, "secret": tenant.secret, "period": tenant.period}
    if tenant.budget_usd is not None:
        entry["budget_usd"] = tenant.budget_usd
    return entry


async def test_unreachable_at_start_then_found_unsafe_refuses_budgeted_keys(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """State Redis down at start: the proxy starts. Up but evicting: keys with a budget get 503
    naming the setting (ERROR log, degraded gauge 1, /readyz 200 "degraded"), unlimited keys are
    served; fixed: served again."""
    port = free_port()
    settings = proxy_settings(
        fake_upstream.url,
        redis_url,
        key_prefix,
        state_redis_url=f"redis://127.0.0.1:{port}/0",
        keys=(_static(CAPPED), _static(OPEN)),
        upstream_api_key=Secret("sk-upstream"),
        store_timeout=0.1,
    )
    body = {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    server: RedisProcess | None = None
    async with ProxyServer(settings) as proxy:
        guard = proxy.app[STATE_GUARD]
        assert guard.safe is None
        down = await chat_raw(proxy, body, api_key=CAPPED.secret)
        server = RedisProcess(port).start("--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru")
        try:
            with caplog.at_level(logging.ERROR, logger="proxy.budget.state_store"):
                unsafe = await chat_raw(proxy, body, api_key=CAPPED.secret)
            unlimited = await chat_raw(proxy, body, api_key=OPEN.secret)
            gauge_unsafe = metric_value(
                await _metrics(proxy.base), "llm_proxy_degraded", component="state_store"
            )
            ready_unsafe = await _readyz(proxy.base)
            client = redis.Redis(port=port)
            client.config_set("maxmemory-policy", "noeviction")  # a private server: ours to change
            client.close()
            assert await guard.check() is True  # what the 60 s re-check does
            fixed = await chat_raw(proxy, body, api_key=CAPPED.secret)
            gauge_fixed = metric_value(
                await _metrics(proxy.base), "llm_proxy_degraded", component="state_store"
            )
            ready_fixed = await _readyz(proxy.base)
        finally:
            server.remove()
    assert down.status == 503
    assert unsafe.status == 503
    error = unsafe.json()["error"]
    assert error["code"] == "state_store_unsafe"
    assert "maxmemory-policy allkeys-lru" in error["message"]
    assert "PROXY_STATE_REDIS_URL" in error["message"]
    assert any(
        "maxmemory-policy allkeys-lru" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
    )
    assert gauge_unsafe == 1
    # Readiness stays 200 (the pod still serves keys without a budget) and says what is degraded.
    assert ready_unsafe == (
        200,
        {"status": "degraded", "degraded": {"state_store": "may evict (maxmemory-policy allkeys-lru)"}},
    )
    assert ready_fixed == (200, {"status": "ok"})
    assert unlimited.status == 200
    assert fixed.status == 200
    assert gauge_fixed == 0


async def test_cache_pressure_never_resets_a_budget_and_evicted_entries_are_clean_misses(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """Tenant A floods a tiny allkeys-lru cache Redis with images; tenant B's spend and key, on the
    state Redis, are untouched, and A's evicted answers come back as MISSes with valid, identical PNGs."""
    cache = RedisProcess(free_port()).start("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
    fake_upstream.state.image_bytes = 300_000
    config = write_config(tmp_path / "keys.toml", [OPEN, CAPPED])
    env = proxy_env(
        fake_upstream.url,
        cache.url,
        key_prefix,
        config,
        PROXY_STATE_REDIS_URL=redis_url,
        PROXY_HOT_CACHE_BYTES="0",
    )
    proxy = start_proxy(env)
    prompts = [f"a lighthouse, variant {i}" for i in range(30)]
    try:
        first_b = await chat(
            proxy.url, {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "b"}]}, CAPPED.secret
        )
        spend_b = await standing(redis_url, key_prefix, CAPPED.id)
        originals = [await chat(proxy.url, _image(p), OPEN.secret) for p in prompts]
        again = [await chat(proxy.url, _image(p), OPEN.secret) for p in prompts]
        later_b = await chat(
            proxy.url, {"model": TEXT_MODEL, "messages": [{"role": "user", "content": "b2"}]}, CAPPED.secret
        )
        evicted = redis.Redis.from_url(cache.url).info("stats")["evicted_keys"]
    finally:
        proxy.stop()
        proxy.close()
        cache.remove()
    assert first_b.status == 200
    assert spend_b.spent > 0
    assert evicted > 0
    assert (
        await standing(redis_url, key_prefix, CAPPED.id)
    ).spent > spend_b.spent  # B's spend grew, never reset
    assert later_b.status == 200  # B's key record survived
    results = [reply.headers["X-Cache"] for reply in again]
    assert "MISS" in results
    for before, after in zip(originals, again, strict=True):
        assert (before.status, after.status) == (200, 200)
        png = png_of(after.json()["choices"][0]["message"]["images"][0]["image_url"]["url"])
        assert_valid_png(png)
        assert png == png_of(before.json()["choices"][0]["message"]["images"][0]["image_url"]["url"])


def _image(prompt: str) -> dict[str, object]:
    return {"model": IMAGE_MODEL, "messages": [{"role": "user", "content": prompt}]}
