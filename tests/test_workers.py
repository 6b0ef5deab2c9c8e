"""`serve --workers N`: spawned workers share one port, /metrics adds them up, SIGTERM stops all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e_helpers import API_KEY, chat_body
from tests.fake_upstream import FakeUpstream
from tests.proxy_process import ProxyProcess

WORKERS = 2
REQUESTS = 20

pytestmark = pytest.mark.timeout(60)


def _requests_total(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llm_proxy_requests_total"
    )


def _worker_pids(tmp: Path) -> set[int]:
    """Pids of workers that recorded a metric: prometheus-client names its files after them."""
    return {int(path.stem.rsplit("_", 1)[1]) for path in tmp.glob("lcp-metrics-*/counter_*.db")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def cli_proxy(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[ProxyProcess]:
    """``python -m proxy serve --workers 2`` on a free port; its temp files go under ``tmp_path``."""
    env = {
        "PROXY_UPSTREAM_URL": fake_upstream.url,
        "PROXY_REDIS_URL": redis_url,
        "PROXY_REDIS_PREFIX": key_prefix,
        "PROXY_SHUTDOWN_GRACE": "5",
        "TMPDIR": str(tmp_path),  # where the parent puts the shared metrics directory
    }
    process = ProxyProcess(env, ("--workers", str(WORKERS)), clean_env=True)
    process.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process.launch()
    try:
        yield process
    finally:
        process.close()


async def test_two_workers_share_the_port_and_aggregate_metrics(
    cli_proxy: ProxyProcess,
    fake_upstream: FakeUpstream,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """Both spawned workers serve; every /metrics answer counts all requests; SIGTERM stops them."""
    await cli_proxy.wait_for_output("Running on", count=WORKERS)  # every worker's aiohttp banner
    base = cli_proxy.base
    headers = {"Authorization": f"Bearer {API_KEY}"}
    caches = []
    for number in range(REQUESTS):
        # A fresh connection per request: SO_REUSEPORT spreads connections, not requests.
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
            session.post(
                f"{base}/v1/chat/completions", json=chat_body(f"q{number % 10}"), headers=headers
            ) as reply,
        ):
            assert reply.status == 200, await reply.text()
            caches.append(reply.headers["X-Cache"])
    # Ten prompts asked twice: the shared Redis cache answers the repeats, whichever worker asks.
    assert caches.count("HIT") == REQUESTS // 2, caches
    assert fake_upstream.chat_calls == REQUESTS // 2

    workers = _worker_pids(tmp_path)
    assert len(workers) == WORKERS, f"not every worker served a request: {workers}"
    for _ in range(6):
        async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as reply:
            assert _requests_total(await reply.text()) == REQUESTS

    assert cli_proxy.terminate() == 0, cli_proxy.output()[-3000:]
    assert not any(_alive(pid) for pid in workers)
    assert not list(tmp_path.glob("lcp-metrics-*")), "the shared metrics directory was left behind"
