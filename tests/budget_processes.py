"""Real proxy processes with managed keys from a TOML file, and the budget state read back from Redis."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from tests.e2e_helpers import RawReply
from tests.proxy_process import REPO, ProxyProcess

UPSTREAM_KEY = "sk-upstream-of-the-proxy"


@dataclass(frozen=True, slots=True)
class Tenant:
    """A managed key declared in the TOML file (``budget_usd`` None: unlimited)."""

    id: str
    secret: str
    budget_usd: float | None = None
    period: str = "total"
    cache_namespace: str | None = None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a TOML basic string for the ASCII values used here


def write_config(
    path: Path, tenants: Iterable[Tenant], pricing: Mapping[str, Mapping[str, Any]] | None = None
) -> Path:
    """A ``PROXY_CONFIG`` file with ``[[keys]]`` and ``[pricing."model"]`` tables."""
    lines: list[str] = []
    for tenant in tenants:
        lines += ["[[keys]]", f"id = {_toml_value(tenant.id)}", f"secret = {_toml_value(tenant.secret)}"]
        lines.append(f"period = {_toml_value(tenant.period)}")
        if tenant.budget_usd is not None:
            lines.append(f"budget_usd = {_toml_value(tenant.budget_usd)}")
        if tenant.cache_namespace is not None:
            lines.append(f"cache_namespace = {_toml_value(tenant.cache_namespace)}")
    for model, entry in (pricing or {}).items():
        lines.append(f"[pricing.{json.dumps(model)}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in entry.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def proxy_env(
    upstream_url: str, redis_url: str | None, prefix: str, config: Path, **extra: str
) -> dict[str, str]:
    """Environment of a managed-mode proxy process in front of the fake upstream."""
    env = {
        "PROXY_UPSTREAM_URL": upstream_url,
        "PROXY_REDIS_PREFIX": prefix,
        "PROXY_CONFIG": str(config),
        "PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "PROXY_UPSTREAM_PRICES": "false",
        "PROXY_LOG_LEVEL": "warning",
        "PROXY_UPSTREAM_TIMEOUT": "60",
    }
    if redis_url is not None:
        env["PROXY_REDIS_URL"] = redis_url
    env.update(extra)
    return env


def start_proxy(env: Mapping[str, str], cwd: Path = REPO) -> ProxyProcess:
    """A started ``python -m proxy serve`` (only ``env`` configures it)."""
    return ProxyProcess(env, clean_env=True, cwd=cwd).start(timeout=30)


async def chat(base_url: str, body: Mapping[str, Any], secret: str, timeout: float = 120) -> RawReply:
    """``POST /v1/chat/completions`` on a proxy process, the whole answer read."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    # A file-like body: aiohttp warns (an error here) about multi-MB bytes written in one go.
    data = io.BytesIO(orjson.dumps(body))
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.post(f"{base_url}/chat/completions", data=data, headers=headers) as response,
    ):
        return RawReply(response.status, response.headers, await response.read())


@dataclass(frozen=True, slots=True)
class Standing:
    """A key's budget hash for one period: what the Lua scripts keep."""

    spent: int
    reserved: int
    requests: int


async def standing(redis_url: str, prefix: str, key_id: str, period_id: str = "total") -> Standing:
    """Read ``{prefix}:budget:{{id}}:p:{period}`` straight from Redis (the same layout since c6c4977)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        raw = await client.hmget(
            f"{prefix}:budget:{{{key_id}}}:p:{period_id}", "spent", "reserved", "requests"
        )
    finally:
        await client.aclose()
    spent, reserved, requests = (int(value or 0) for value in raw)
    return Standing(spent, reserved, requests)


async def ledger_rows(redis_url: str, prefix: str, key_id: str) -> list[dict[str, str]]:
    """Every ledger row of a key, oldest first."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        entries = await client.xrange(f"{prefix}:budget:{{{key_id}}}:ledger")
    finally:
        await client.aclose()
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]


async def until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll an async predicate until true (bounded; fails with ``what``)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
