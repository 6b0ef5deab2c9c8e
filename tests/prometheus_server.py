"""A real Prometheus server for tests: started on a free port, scraping one target every second.

Fails the test (never skips) when no ``prometheus`` (or ``promtool``) binary is installed; ``make test``
installs both (``make prometheus-bin``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import pytest

from tests.proxy_harness import free_port

JOB = "llm-proxy"


def _binary(variable: str, name: str, needed_by: str) -> str:
    """``$variable``, else ``name`` on PATH, else /usr/bin/``name`` (Debian's prometheus package);
    fails the test with the command that installs it."""
    found = os.environ.get(variable) or shutil.which(name) or f"/usr/bin/{name}"
    if not os.access(found, os.X_OK):
        pytest.fail(
            f"{needed_by} need {name}, and {found} is not installed: run `make prometheus-bin` "
            f"(apt-get install --no-install-recommends prometheus) or set {variable}.",
            pytrace=False,
        )
    return found


def prometheus_binary() -> str:
    """The Prometheus server (``PROXY_TEST_PROMETHEUS`` names another one)."""
    return _binary("PROXY_TEST_PROMETHEUS", "prometheus", "The live dashboard tests")


def promtool_binary() -> str:
    """promtool (``PROXY_TEST_PROMTOOL`` names another one)."""
    return _binary("PROXY_TEST_PROMTOOL", "promtool", "The alert rule tests")


class PrometheusServer:
    """``async with PrometheusServer(workdir, "127.0.0.1:PORT") as prom``; ``prom.url`` is its API."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.workdir = workdir
        self.target = target
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PrometheusServer:
        config = self.workdir / "prometheus.yml"
        scrape = {"job_name": JOB, "static_configs": [{"targets": [self.target]}]}
        global_ = {"scrape_interval": "1s", "scrape_timeout": "1s"}
        config.write_text(json.dumps({"global": global_, "scrape_configs": [scrape]}))  # JSON is YAML
        command = [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
        ]
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._session = aiohttp.ClientSession()
        await self._wait_ready()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def _wait_ready(self) -> None:
        assert self._session is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                async with self._session.get(f"{self.url}/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        pytest.fail(f"Prometheus never became ready:\n{self._log_tail()}")

    async def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector (a scalar becomes a one-element vector)."""
        assert self._session is not None
        params = {"query": expr, "time": f"{time.time() if at is None else at:.3f}"}
        async with self._session.get(f"{self.url}/api/v1/query", params=params) as response:
            payload = await response.json()
        assert payload.get("status") == "success", f"{expr}: {payload}"
        data = payload["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    async def value(self, expr: str, at: float) -> float:
        """The single value of ``expr`` at ``at``."""
        result = await self.query(expr, at)
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])

    async def wait_for_scrapes(self, since: float, scrapes: int) -> float:
        """Wait for ``scrapes`` successful scrapes that started after ``since``; returns a query time
        at which they are all visible (pin later queries to it so their answers cannot drift)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = time.time()
            window = f"{max(1, math.ceil((now - since) * 1000))}ms"
            # A sample's timestamp is its scrape's start, so this counts scrapes begun after `since`.
            done = await self.query(f'sum_over_time(up{{job="{JOB}"}}[{window}])', now)
            if done and float(done[0]["value"][1]) >= scrapes:
                return now
            await asyncio.sleep(0.2)
        pytest.fail(f"Prometheus did not scrape {self.target} {scrapes} times:\n{self._log_tail()}")
