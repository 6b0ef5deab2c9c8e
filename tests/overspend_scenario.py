"""The overspend scenario of issue 10: two proxy processes, ~50 concurrent requests, very long answers.

A budget sized for about one long answer; an upstream whose every text answer is
``LONG_TOKENS`` tokens unless the request bounds it. Runnable against any checkout of the proxy
(``repo``) so the same scenario measures the code before and after the fix:

    .venv/bin/python -m tests.overspend_scenario /tmp/old     # e.g. a worktree of c6c4977
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.budget_processes import Tenant, chat, ledger_rows, proxy_env, standing, start_proxy, write_config
from tests.fake_upstream import FakeUpstream
from tests.proxy_process import REPO
from tests.redis_process import delete_prefix

MODEL = "gpt-4o-mini"  # $0.15 / $0.60 per million tokens, 16,384 output tokens at most
LONG_TOKENS = 16_000
REQUESTS = 50
# About one long answer: 16,000 tokens at 0.6 micro-USD is 9,600 micro-USD.
BUDGET_MICRO = 10_000


@dataclass(frozen=True, slots=True)
class Figures:
    """What one run produced."""

    upstream_calls: int
    ok: int
    refused: int
    spent_micro: int
    reserved_micro: int
    budget_micro: int
    largest_micro: int  # the costliest single settled request

    def line(self) -> str:
        """One line for a report."""
        return (
            f"{self.upstream_calls} upstream calls, {self.ok} answered, {self.refused} refused; settled "
            f"{self.spent_micro} micro-USD of a {self.budget_micro} budget "
            f"({self.spent_micro / self.budget_micro:.2f}x), largest request {self.largest_micro}, "
            f"{self.reserved_micro} left reserved"
        )


async def run(repo: Path, redis_url: str, prefix: str, workdir: Path) -> Figures:
    """Run the scenario once against the proxy checked out at ``repo``."""
    tenant = Tenant("overspend", "sk-lcp-overspend-tenant-secret", BUDGET_MICRO / 1_000_000)
    config = write_config(workdir / "keys.toml", [tenant])
    async with FakeUpstream() as upstream:
        upstream.state.completion_tokens = LONG_TOKENS
        upstream.state.latency_s = 0.3  # every request is in flight while the others arrive
        env = proxy_env(upstream.url, redis_url, prefix, config)
        replicas = [start_proxy(env, repo), start_proxy(env, repo)]
        try:
            bodies = [
                {"model": MODEL, "messages": [{"role": "user", "content": f"write forever, take {i}"}]}
                for i in range(REQUESTS)
            ]
            replies = await asyncio.gather(
                *(chat(replicas[i % 2].url, body, tenant.secret) for i, body in enumerate(bodies))
            )
        finally:
            for replica in replicas:
                replica.stop()
                replica.close()
        calls = upstream.chat_calls
    final = await standing(redis_url, prefix, tenant.id)
    settled = [int(row["micro_usd"]) for row in await ledger_rows(redis_url, prefix, tenant.id)]
    return Figures(
        upstream_calls=calls,
        ok=sum(r.status == 200 for r in replies),
        refused=sum(r.status == 429 for r in replies),
        spent_micro=final.spent,
        reserved_micro=final.reserved,
        budget_micro=BUDGET_MICRO,
        largest_micro=max(settled, default=0),
    )


def main(argv: list[str]) -> int:
    """``python -m tests.overspend_scenario [repo] [redis_url]``: print the figures of one run."""
    repo = Path(argv[0]) if argv else REPO
    redis_url = argv[1] if len(argv) > 1 else "redis://127.0.0.1:6379/0"
    prefix = f"lcpscenario-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as workdir:
        try:
            figures = asyncio.run(run(repo, redis_url, prefix, Path(workdir)))
        finally:
            delete_prefix(redis_url, prefix)
    print(f"{repo}: {figures.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
