"""The benchmark itself runs: a short pass of its scenarios, so `make bench` cannot rot.

Speed goals are judged by `make bench` on an idle machine, never here; this pins that the bench
starts its processes (proxy, upstream, bare references) and private Redis, measures, checks and
writes its report with the ratio table first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)

# proxy scenario -> the bare reference it is interleaved with, and the ratio target judged on it
_REFERENCES = {
    "text_hit": ("bare-bytes", "text hit"),
    "vision_hit": ("bare-read", "vision-edit hit (~2 MB request)"),
    "image_hit_redis": ("raw-redis-get", "image hit from Redis every request"),
}


def _row(raw: dict[str, Any], scenario: str, target: str) -> dict[str, Any]:
    rows = [r for r in raw["throughput"] if r["scenario"] == scenario and r["target"] == target]
    assert len(rows) == 1, (scenario, target, raw["throughput"])
    return rows[0]


def test_bench_quick_pass_writes_a_report_with_its_checks_met(tmp_path: Path) -> None:
    """Single flight (1 upstream call for 32 misses), Redis bytes per image and miss latency are
    measured against a private redis-server, each bare reference answers the proxy's exact bytes
    next to it, and the report leads with ratios computed from those two rows."""
    results = tmp_path / "RESULTS.md"
    env = {k: v for k, v in os.environ.items() if k != "PROXY_BENCH_REDIS_URL"}
    scenarios = ("coalesce32", "redis_memory", "miss_latency", *_REFERENCES)
    command = [sys.executable, "-m", "bench", "--quick", "--miss-samples", "20", "--loadgen", "aiohttp"]
    command += ["--duration", "0.3", "--pairs", "1", "--image-bytes", "300000"]
    for scenario in scenarios:
        command += ["--scenario", scenario]
    command += ["--results", str(results), "--out", str(tmp_path / "out")]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = results.read_text()
    assert "private redis-server started by the bench" in report
    assert report.index("## Targets: ratios within this run") < report.index("## Throughput")
    raw = json.loads((tmp_path / "out" / "latest.json").read_text())
    verdicts = {(t["target"], t["cell"]): t for t in raw["targets"]}
    for cell in ("w1/redis", "w1/memory"):
        single_flight = verdicts[("32 identical concurrent misses", cell)]
        assert single_flight["met"], single_flight
    memory = verdicts[("Redis bytes per cached image", "w1/redis")]
    assert memory["met"], memory
    assert {row["target"] for row in raw["miss_latency"]} == {"w1/memory", "w1/redis"}
    for scenario, (kind, target) in _REFERENCES.items():
        reference = _row(raw, scenario, kind)
        assert reference["load"]["requests"] > 0, reference
        assert reference["problems"] == [], reference
        verdict = next(v for v in raw["targets"] if v["target"] == target)
        proxy = _row(raw, scenario, verdict["cell"])
        assert reference["pair"] == verdict["cell"], reference
        assert isinstance(verdict["met"], bool), verdict
        assert verdict["value"] == pytest.approx(proxy["load"]["rps"] / reference["load"]["rps"]), verdict
        assert 0 < verdict["value"] < 100, verdict
        assert f"| {target} | {kind} {scenario}: " in report
