"""The benchmark itself runs: a short pass of its correctness scenarios, so `make bench` cannot rot.

Speed goals are judged by `make bench` on an idle machine, never here; this pins that the bench
starts its processes and private Redis, measures, checks and writes its report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def test_bench_quick_pass_writes_a_report_with_its_checks_met(tmp_path: Path) -> None:
    """Single flight (1 upstream call for 32 misses), Redis bytes per image and miss latency are
    measured against a private redis-server, and the report says so."""
    results = tmp_path / "RESULTS.md"
    env = {k: v for k, v in os.environ.items() if k != "PROXY_BENCH_REDIS_URL"}
    scenarios = ("coalesce32", "redis_memory", "miss_latency")
    command = [sys.executable, "-m", "bench", "--quick", "--miss-samples", "20", "--loadgen", "aiohttp"]
    for scenario in scenarios:
        command += ["--scenario", scenario]
    command += ["--results", str(results), "--out", str(tmp_path / "out")]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = results.read_text()
    assert "private redis-server started by the bench" in report
    raw = json.loads((tmp_path / "out" / "latest.json").read_text())
    verdicts = {(t["target"], t["cell"]): t for t in raw["targets"]}
    for cell in ("w1/redis", "w1/memory"):
        single_flight = verdicts[("32 identical concurrent misses", cell)]
        assert single_flight["met"], single_flight
    memory = verdicts[("Redis bytes per cached image", "w1/redis")]
    assert memory["met"], memory
    assert {row["target"] for row in raw["miss_latency"]} == {"w1/memory", "w1/redis"}
