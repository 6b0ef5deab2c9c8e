"""A throwaway ``redis-server`` on a chosen port: the fallback Redis of the suite, and outage tests."""

from __future__ import annotations

import random
import shutil
import signal
import socket
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


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (a test's or a scenario's own keys, never others')."""
    client = redis.Redis.from_url(url)
    try:
        doomed = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if doomed:
            client.delete(*doomed)
    finally:
        client.close()


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

    def start(self, *extra: str) -> RedisProcess:
        """Start (``extra``: more server flags) and wait (bounded) until it answers PING."""
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
                *extra,
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

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, the worst kind of slow Redis."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: answer again (what was sent meanwhile is processed now)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate and reap the process (its scratch directory stays for a restart)."""
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()  # a frozen process would hold SIGTERM until it is continued
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def remove(self) -> None:
        """Stop for good and delete the scratch directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def cluster_ports(count: int) -> list[int]:
    """Free ports for cluster nodes: each below 55536 with its bus port (port + 10000) free too."""
    ports: list[int] = []
    while len(ports) < count:
        # It and its bus port below Linux's ephemeral range (32768+), where free_port() and
        # client sockets live.
        port = random.randint(20000, 22700)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisClusterProcess:
    """Three ``redis-server --cluster-enabled`` primaries joined by ``redis-cli --cluster create``."""

    def __init__(self, count: int = 3) -> None:
        self.nodes = [RedisProcess(port) for port in cluster_ports(count)]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2`` (two seeds: any one is enough)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])

    def start(self) -> RedisClusterProcess:
        """Start the nodes, create the cluster and wait (bounded) for ``cluster_state:ok``."""
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.fail("redis-cli is not installed (apt-get install redis-tools)", pytrace=False)
        try:
            for node in self.nodes:
                node.start(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"{node.workdir}/nodes-{node.port}.conf",
                )
        except BaseException:
            self.remove()
            raise
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if created.returncode != 0:
            self.remove()
            pytest.fail(f"redis-cli --cluster create failed: {created.stdout!r} {created.stderr!r}")
        deadline = time.monotonic() + 15
        while not all(_cluster_ok(node.port) for node in self.nodes):
            if time.monotonic() > deadline:
                self.remove()
                pytest.fail("the Redis Cluster never reached cluster_state:ok", pytrace=False)
            time.sleep(0.05)
        return self

    def remove(self) -> None:
        """Stop every node and delete their scratch directories."""
        for node in self.nodes:
            node.remove()


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        info = client.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
        return isinstance(info, dict) and info.get("cluster_state") == "ok"
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
