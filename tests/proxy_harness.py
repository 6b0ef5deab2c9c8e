"""Running the real proxy app on a real loopback socket for tests."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.config import Settings
from proxy.web.server import ProxyRunner
from tests.task_dump import pending_tasks

# How long aiohttp lets in-flight handlers finish when a test proxy stops.
SHUTDOWN_TIMEOUT_S = 5.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ProxyServer:
    """The proxy app on 127.0.0.1:<free port>; ``url`` is the OpenAI ``base_url`` (ends in /v1)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.port = settings.port if settings.port not in (0, 8080) else free_port()
        self.settings = dataclasses.replace(settings, host="127.0.0.1", port=self.port)
        self.registry = registry or CollectorRegistry()
        self.app = create_app(self.settings, self.registry)
        self.runner = ProxyRunner(
            self.app, header_timeout=self.settings.header_timeout, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"{self.base}/v1"

    async def start(self) -> ProxyServer:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        """Graceful shutdown, which must be bounded: a hang fails here, listing what it waits for."""
        limit = self.settings.shutdown_grace + SHUTDOWN_TIMEOUT_S + 15
        try:
            async with asyncio.timeout(limit):
                await self.runner.stop(SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"the proxy did not stop within {limit:.0f} s; still running:\n{pending_tasks()}")

    async def __aenter__(self) -> ProxyServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


def proxy_settings(upstream_url: str, redis_url: str | None, prefix: str, **changes: Any) -> Settings:
    """Test settings: the fake upstream, the test's Redis prefix, short timeouts.

    Prices are not loaded from the fake upstream's model list unless a test asks
    (``upstream_prices=True``): the background fetch would add to its ``calls["models"]``.
    """
    base = Settings(
        upstream_url=upstream_url,
        redis_url=redis_url,
        redis_prefix=prefix,
        upstream_timeout=30.0,
        shutdown_grace=5.0,
        upstream_prices=False,
    )
    return dataclasses.replace(base, **changes)
