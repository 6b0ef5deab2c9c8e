"""The command line as a user meets it: help, the demo's flags, worker warnings, repeatable flags."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli.keys import main as keys_cli
from proxy.cli.serve import WORKERS_WITHOUT_REDIS
from tests.e2e_helpers import chat_body, chat_raw
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import ADMIN_TOKEN, create_key, managed_proxy
from tests.proxy_process import REPO, ProxyProcess

pytestmark = pytest.mark.timeout(60)
WARNING_START = WORKERS_WITHOUT_REDIS.split("%d", 1)[1].split(":", 1)[0]  # " without PROXY_REDIS_URL"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m proxy ARGS`` as a user would run it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_top_level_help_lists_each_command_on_one_line() -> None:
    """`llm-cache-proxy --help` names serve, demo and keys, one line each, and no internal docstring."""
    result = run_cli("--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for command in ("serve", "demo", "keys"):
        described = [line for line in lines if line.startswith(f"  {command}  ")]
        assert len(described) == 1, result.stdout
        assert len(described[0].split(maxsplit=1)[1]) > 20  # a real description follows
    assert "reads the environment" not in result.stdout
    assert "``" not in result.stdout  # reST markup of a module docstring


@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [("--workers", "2", "runs one process"), ("--upstream-url", "http://127.0.0.1:9/v1", "simulator")],
)
def test_demo_refuses_flags_it_would_ignore(flag: str, value: str, why: str) -> None:
    """`demo --workers N` / `demo --upstream-url` exit 2 and say why, and demo --help offers neither."""
    result = run_cli("demo", flag, value)
    assert result.returncode == 2
    assert f"{flag} is not supported" in result.stderr
    assert why in result.stderr
    assert flag not in run_cli("demo", "--help").stdout


def test_serve_help_still_offers_workers_and_upstream() -> None:
    """Only the demo lost them: `serve --help` lists --workers and --upstream-url."""
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    assert "--workers" in result.stdout
    assert "--upstream-url" in result.stdout


async def two_workers_output(env: dict[str, str]) -> str:
    """What `serve --workers 2` prints until both workers listen (then it is stopped)."""
    process = ProxyProcess(env, ("--workers", "2"), clean_env=True)
    process.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process.launch()
    try:
        await process.wait_for_output("Running on", count=2)
        return process.output()
    finally:
        assert process.stop() == 0
        process.close()


async def test_serve_workers_without_redis_warns_at_start(tmp_path: Path) -> None:
    """`serve --workers 2` with the in-memory store logs that each worker has a private cache."""
    output = await two_workers_output({"TMPDIR": str(tmp_path)})
    assert f"--workers 2{WARNING_START}" in output
    assert "own in-memory cache" in output


async def test_serve_workers_with_redis_does_not_warn(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    """With PROXY_REDIS_URL the workers share the cache: no warning."""
    env = {"TMPDIR": str(tmp_path), "PROXY_REDIS_URL": redis_url, "PROXY_REDIS_PREFIX": key_prefix}
    output = await two_workers_output(env)
    assert WARNING_START not in output


async def test_keys_create_keeps_every_repeated_models_flag(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """`keys create --models a --models b c` allows a, b and c (repeats extend, none is dropped)."""
    async with managed_proxy(fake_upstream, None, key_prefix) as proxy:
        env = {"PROXY_ADMIN_URL": proxy.base, "PROXY_ADMIN_TOKEN": ADMIN_TOKEN}
        out = io.StringIO()
        argv = ["create", "--alias", "multi", "--models", "gpt-4o*", "--models", "gemini-*", "o3"]
        code = await asyncio.to_thread(keys_cli, argv, env, out)
    assert code == 0, out.getvalue()
    assert json.loads(out.getvalue())["allowed_models"] == ["gpt-4o*", "gemini-*", "o3"]


async def test_keys_purge_all_empties_every_tenants_cache(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """`keys purge --all` sends `{"all": true}`: two keys' cached answers both become MISSes."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        secrets = [(await create_key(proxy, budget_usd=1))[1] for _ in range(2)]
        for expected in ("MISS", "HIT"):
            for secret in secrets:
                reply = await chat_raw(proxy, chat_body("purge me"), api_key=secret)
                assert reply.headers["X-Cache"] == expected
        env = {"PROXY_ADMIN_URL": proxy.base, "PROXY_ADMIN_TOKEN": ADMIN_TOKEN}
        out = io.StringIO()
        code = await asyncio.to_thread(keys_cli, ["purge", "--all"], env, out)
        assert code == 0, out.getvalue()
        assert json.loads(out.getvalue())["deleted"] >= 2
        for secret in secrets:
            reply = await chat_raw(proxy, chat_body("purge me"), api_key=secret)
            assert reply.headers["X-Cache"] == "MISS"
    assert fake_upstream.chat_calls == 4
