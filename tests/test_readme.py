"""The README's commands work as written, and its 429 example is what a real refusal looks like.

A newcomer copies commands: every ``llm-cache-proxy ...`` line must parse with the real CLI, every
``make X`` must be a target, the keys CLI block and the ``make keys`` line must succeed against a
live proxy, and the over-budget example must match a 429 the proxy really sends.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest

from proxy.cli.keys import build_parser as keys_parser
from proxy.cli.main import build_parser as main_parser
from tests.e2e_helpers import chat_body, chat_raw
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import create_key, managed_proxy
from tests.proxy_process import REPO, ProxyProcess

pytestmark = pytest.mark.timeout(90)

README = (REPO / "README.md").read_text(encoding="utf-8")
PLACEHOLDER_ID = "key_0123abcd"
ADMIN_TOKEN = "readme-admin-token-0123456789-abcdefghij"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Leading `NAME=value` or `NAME=$(command)` environment assignments of a command line.
_ASSIGNMENTS = re.compile(r"^(?:[A-Z_]+=(?:\$\([^)]*\)|\S+)\s+)+")
_NUMBER = re.compile(r"\d+\.\d+")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


def code_blocks(language: str) -> list[str]:
    """Bodies of the README's fenced blocks in ``language``."""
    return [body for lang, body in _FENCE.findall(README) if lang == language]


def shell_commands() -> Iterator[str]:
    """Each command line of the README's ``sh`` blocks, without its trailing comment."""
    for block in code_blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.split(r"\s{2,}#", line, maxsplit=1)[0].strip()
            if command and not command.startswith("#"):
                yield command


def cli_lines() -> list[str]:
    """README command lines that run the CLI."""
    return [line for line in shell_commands() if line.startswith("llm-cache-proxy")]


def make_lines() -> list[list[str]]:
    """README command lines that run make (after any VAR=value prefix), as argument lists."""
    found = []
    for line in shell_commands():
        words = shlex.split(_ASSIGNMENTS.sub("", line))
        if words and words[0] == "make":
            found.append(words)
    return found


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse like the console script does (``keys`` has its own parser); SystemExit on bad flags."""
    if argv[:1] == ["keys"]:
        return keys_parser().parse_args(argv[1:])
    return main_parser().parse_args(argv)


def normalised(message: str) -> str:
    """A budget message with its amounts and reset time replaced by placeholders."""
    return _NUMBER.sub("<usd>", _TIMESTAMP.sub("<time>", message))


def test_readme_shows_cli_and_make_commands() -> None:
    """The extraction finds the README's commands (so the tests below are not vacuous)."""
    assert len(cli_lines()) >= 9
    assert {words[1] for words in make_lines()} >= {"run", "test", "keys"}


@pytest.mark.parametrize("line", cli_lines())
def test_readme_cli_line_parses(line: str) -> None:
    """Every `llm-cache-proxy ...` line of the README is accepted by the real argument parser."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            parse_cli(shlex.split(line)[1:])
        except SystemExit as exc:
            pytest.fail(f"{line!r} is refused: {stderr.getvalue()} (exit {exc.code})")


def test_readme_make_commands_name_real_targets() -> None:
    """Each `make X` of the README is a target of the Makefile; `make keys ARGS=...` parses."""
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))
    for words in make_lines():
        assert words[1] in targets, words
        for word in words[2:]:
            if word.startswith("ARGS="):
                parse_cli(["keys", *shlex.split(word.removeprefix("ARGS="))])


def run_keys_line(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One README keys command as a user runs it (``llm-cache-proxy`` is ``python -m proxy``)."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *shlex.split(line)[1:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_readme_keys_block_and_make_keys_work_against_a_live_proxy() -> None:
    """The keys CLI block runs line by line (the created id in place of the placeholder), and so
    does the set-up's `make keys ARGS=...` line, against a proxy started with an admin token."""
    proxy = ProxyProcess({"PROXY_ADMIN_TOKEN": ADMIN_TOKEN}, clean_env=True).start()
    try:
        # A user's shell: no PROXY_* of the test run, and no MAKEFLAGS/MAKELEVEL of `make test`
        # (a nested make would add "Entering directory" lines to the output).
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "MAKE", "MFLAGS"))}
        env = {
            **inherited,
            "PROXY_ADMIN_URL": proxy.base,
            "PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        (block,) = [b for b in code_blocks("sh") if "keys create" in b and "keys revoke" in b]
        key_id = None
        for line in block.strip().splitlines():
            result = run_keys_line(line.replace(PLACEHOLDER_ID, key_id or PLACEHOLDER_ID), env)
            assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
            if key_id is None:
                created = json.loads(result.stdout)
                assert created["secret"].startswith("sk-lcp-")
                assert created["allowed_models"] == ["gpt-4o*", "gemini-*"]
                key_id = created["id"]
        (make_keys,) = [w for w in make_lines() if w[1] == "keys"]
        result = subprocess.run(
            make_keys, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        # make echoes the command first; the CLI's JSON follows.
        made, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index("{") :])
        assert (made["alias"], made["budget_usd"]) == ("team-a", 5)
    finally:
        proxy.stop()
        proxy.close()


async def test_readme_429_example_matches_a_real_refusal(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """The README's over-budget block has the real status line, headers and body shape and wording."""
    (block,) = [b for b in code_blocks("http") if " 429 " in b]
    head, body = block.split("\n\n", 1)
    status_line, *header_lines = head.splitlines()
    example = json.loads(body)["error"]
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        _, secret = await create_key(proxy, alias="team-a", budget_usd=0.00001, period="month")
        reply = await chat_raw(proxy, chat_body("hello"), api_key=secret)
    assert status_line == f"HTTP/1.1 {reply.status} Too Many Requests"
    for line in header_lines:
        name, value = line.split(": ", 1)
        assert name in reply.headers
        if not value.isdigit():  # Retry-After depends on the clock
            assert reply.headers[name] == value
    real = reply.json()["error"]
    assert list(example) == list(real)  # same fields, same order
    assert {k: v for k, v in example.items() if k != "message"} == {
        k: v for k, v in real.items() if k != "message"
    }
    assert normalised(example["message"]) == normalised(real["message"])
    assert fake_upstream.chat_calls == 0
