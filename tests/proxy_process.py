"""The proxy as a real OS process (``python -m proxy serve``), for crash and multi-process tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping

from tests.proxy_harness import free_port


class ProxyProcess:
    """``python -m proxy serve`` on a free port with the given ``PROXY_*`` environment."""

    def __init__(self, env: Mapping[str, str], args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "PROXY_PORT": str(self.port), "PROXY_HOST": "127.0.0.1"}
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: a chatty process can never block on a full pipe.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; close()

    @property
    def url(self) -> str:
        """OpenAI base URL of this process."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 20.0) -> ProxyProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("proxy did not become healthy in time")

    def output(self) -> str:
        """What the process wrote to stderr so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def close(self) -> None:
        """Release the log file."""
        self.log.close()
