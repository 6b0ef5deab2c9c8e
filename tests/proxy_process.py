"""The proxy as a real OS process (``python -m proxy serve|demo``), for crash, worker and CLI tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.proxy_harness import free_port

REPO = Path(__file__).resolve().parents[1]


class ProxyProcess:
    """``python -m proxy <command> --port <free>`` with the given environment.

    ``clean_env`` drops every ``PROXY_*`` variable inherited from the test run, so only ``env``
    configures the process. The upstream price-list fetch is off unless ``env`` turns it on
    (``PROXY_UPSTREAM_PRICES``): it would add a ``GET /v1/models`` to what the upstream received.
    Output (stdout and stderr) goes to a file, never a pipe: a chatty process can never block on
    a full pipe.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        args: tuple[str, ...] = (),
        *,
        command: str = "serve",
        clean_env: bool = False,
        cwd: Path = REPO,
    ) -> None:
        self.port = free_port()
        self.cwd = cwd  # another checkout of the proxy (e.g. an old commit, for before/after figures)
        inherited = {k: v for k, v in os.environ.items() if not (clean_env and k.startswith("PROXY_"))}
        self.env = {"PROXY_UPSTREAM_PRICES": "false", **inherited, **env, "PROXY_HOST": "127.0.0.1"}
        self.argv = [sys.executable, "-m", "proxy", command, "--port", str(self.port), *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; close()

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """OpenAI base URL of this process."""
        return f"{self.base}/v1"

    def launch(self) -> ProxyProcess:
        """Start the process without waiting for it."""
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        return self

    def start(self, timeout: float = 20.0) -> ProxyProcess:
        """Launch and wait until ``/healthz`` answers."""
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("proxy did not become healthy in time")

    async def wait_for_output(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until ``text`` was printed ``count`` times; RuntimeError if the process dies first."""
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            code = self.proc.poll() if self.proc is not None else None
            if code is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not printed (exit {code}):\n{self.output()[-3000:]}")
            await asyncio.sleep(0.1)

    def output(self) -> str:
        """Everything the process printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait for the exit code (raises if it does not exit in time)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            try:
                self.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def close(self) -> None:
        """Kill if still running and release the log file."""
        self.kill()
        self.log.close()
