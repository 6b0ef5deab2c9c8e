"""A throwaway ``redis-server`` on a chosen port: the fallback Redis of the suite, and outage tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

import pytest
import redis


def redis_server_binary() -> str:
    """Path of ``redis-server``; fails the run (never skips) when it is not installed."""
    found = shutil.which("redis-server") or shutil.which("/usr/bin/redis-server")
    if found is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)", pytrace=False)
    return found


def answers(url: str) -> bool:
    """Whether a Redis at ``url`` answers PING right now."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


class RedisProcess:
    """redis-server on a fixed port, in its own scratch directory; can be stopped and started again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.workdir = tempfile.mkdtemp(prefix="lcp-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        """Start and wait (bounded) until it answers PING; fails the test otherwise."""
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not answers(self.url):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"redis-server on port {self.port} never answered", pytrace=False)
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Terminate and reap the process (its scratch directory stays for a restart)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def remove(self) -> None:
        """Stop for good and delete the scratch directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
