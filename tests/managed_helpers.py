"""Helpers for the managed-key tests: a proxy with an admin token and an upstream key, admin calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from proxy.config import Secret
from tests.e2e_helpers import JSON, RawReply, send_raw
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, proxy_settings

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
UPSTREAM_KEY = "sk-upstream-of-the-proxy"


@asynccontextmanager
async def managed_proxy(
    upstream: FakeUpstream, redis_url: str | None, prefix: str, **changes: Any
) -> AsyncIterator[ProxyServer]:
    """A proxy with the admin API on and an upstream key the fake upstream requires.

    Its Redis operations get 2 s, not the product's 0.25 s, unless a test says otherwise: a key
    lookup is a Redis call per request, and on a machine loaded by the rest of the suite one
    passed 0.25 s (a 503 with nothing spent, not what these tests are about).
    """
    upstream.state.valid_keys = {UPSTREAM_KEY}
    changes.setdefault("store_timeout", 2.0)
    settings = proxy_settings(
        upstream.url,
        redis_url,
        prefix,
        admin_token=Secret(ADMIN_TOKEN),
        upstream_api_key=Secret(UPSTREAM_KEY),
        **changes,
    )
    async with ProxyServer(settings) as server:
        yield server


async def admin(
    proxy: ProxyServer, method: str, path: str, body: JSON | None = None, *, token: str | None = ADMIN_TOKEN
) -> RawReply:
    """One admin API call (``path`` below ``/admin``)."""
    return await send_raw(f"{proxy.base}/admin{path}", body, method=method, api_key=token)


async def create_key(proxy: ProxyServer, **settings: Any) -> tuple[JSON, str]:
    """Issue a key through the admin API; returns (key JSON, plaintext secret)."""
    reply = await admin(proxy, "POST", "/keys", {"alias": "team-a", **settings})
    assert reply.status == 201, reply.body
    created = reply.json()
    return created, created.pop("secret")


async def key_status(proxy: ProxyServer, key_id: str) -> JSON:
    """``GET /admin/keys/{id}``."""
    reply = await admin(proxy, "GET", f"/keys/{key_id}")
    assert reply.status == 200, reply.body
    result: JSON = reply.json()
    return result


async def metrics_text(proxy: ProxyServer) -> str:
    """The proxy's ``/metrics`` page."""
    async with aiohttp.ClientSession() as session, session.get(f"{proxy.base}/metrics") as response:
        return await response.text()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
