"""The benchmark itself runs: a short pass of its scenarios, so `make bench` cannot rot.

Speed goals are judged by `make bench` on an idle machine, never here; this pins that the bench
starts its processes (proxy, upstream, bare references) and private Redis, measures, checks and
writes its report with the ratio table first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.load import LoadResult
from bench.payloads import IMAGE_MODEL, TEXT_MODEL
from bench.profile import parse_folded, top_frames
from bench.rivals import Side, litellm_config, render
from bench.sections import carried_over, put_section
from bench.soak_report import slope_mib_per_min

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
    scenarios = (
        "coalesce32",
        "redis_memory",
        "images_redis_memory",
        "images_api_hit",
        "miss_latency",
        *_REFERENCES,
    )
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
    for name in ("Redis bytes per cached image", "Redis bytes per cached image (Images API)"):
        memory = verdicts[(name, "w1/redis")]
        assert memory["met"], memory
    images_hit = _row(raw, "images_api_hit", "w1/redis")
    assert images_hit["problems"] == [], images_hit
    assert images_hit["load"]["requests"] > 0, images_hit
    assert {row["target"] for row in raw["miss_latency"]} == {"w1/memory", "w1/redis"}
    # The limit of the stack for a miss, measured in the same rounds (bench.bare's forwarder).
    assert all(row["forward_p50_ms"] > 0 for row in raw["miss_latency"]), raw["miss_latency"]
    assert "bare-forward added p50 ms" in report
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
        assert 0 < verdict["cpu_ratio"] < 100, verdict
        assert f"| {target} | {kind} {scenario}: " in report


def test_bench_growth_fills_through_the_proxy_hits_every_entry_and_purges_the_namespace(
    tmp_path: Path,
) -> None:
    """The growth mode writes its entries as proxy misses, hits random ones of them (all HITs, no
    upstream call), purges the namespace to zero entry keys, samples RSS, and keeps the matrix's
    part of RESULTS.md when it writes its own section."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nthe matrix's tables\n")
    command = [sys.executable, "-m", "bench", "growth", "--levels", "10,20", "--hot-images", "1,2"]
    command += ["--duration", "0.3", "--loadgen", "aiohttp", "--results", str(results)]
    command += ["--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = results.read_text()
    assert report.startswith("# Benchmark results\n\nthe matrix's tables\n")
    assert "<!-- section:growth -->" in report
    raw = json.loads((tmp_path / "out" / "growth-latest.json").read_text())
    assert [level["entry_keys"] for level in raw["levels"]] == [10, 20]
    assert all(
        level["text_hit"]["requests"] > 0 and level["image_hit"]["requests"] > 0 for level in raw["levels"]
    )
    assert raw["purge"]["deleted"] == 20
    assert raw["purge"]["entry_keys_left"] == 0
    assert all(state["rss"] > 0 for state in raw["hot_tier"])
    assert {(w["scenario"], w["workers"]) for w in raw["workers"]} == {
        (s, n) for s in ("text_hit", "image_hit") for n in (1, 2)
    }


def test_results_sections_of_other_modes_survive_a_rewrite_and_replace_only_themselves(
    tmp_path: Path,
) -> None:
    """A mode's section replaces its previous version in place; the matrix carries every section
    over when it rewrites the file."""
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\nmatrix v1\n")
    put_section(path, "growth", "## Growth\n\nv1")
    put_section(path, "soak", "## Soak\n\nv1")
    put_section(path, "growth", "## Growth\n\nv2")
    text = path.read_text()
    assert text.index("## Growth\n\nv2") < text.index("## Soak\n\nv1")
    assert "v1\n<!-- /section:growth" not in text
    kept = carried_over(path)
    path.write_text("# Benchmark results\n\nmatrix v2\n\n" + kept)
    assert carried_over(path) == kept
    assert "matrix v1" not in path.read_text()


def test_py_spy_folded_stacks_rank_functions_by_own_and_by_total_samples() -> None:
    """Own time counts the innermost frame only; total time counts a function once per sample
    even when it recurses; repo paths are shortened, native addresses name their library."""
    root = str(ROOT)
    folded = "\n".join(
        [
            f"main ({root}/proxy/__main__.py:10);handle ({root}/proxy/chat.py:5);"
            f"handle ({root}/proxy/chat.py:9);hash (/x/site-packages/hashlib.py:3) 7",
            f"main ({root}/proxy/__main__.py:10);write (/x/site-packages/aiohttp/http_writer.py:4) 3",
            "main (/r/proxy/__main__.py:10);0x7f00 (libc.so.6) 2",
        ]
    )
    stacks = parse_folded(folded)
    own = dict(top_frames(stacks, own=True))
    total = dict(top_frames(stacks, own=False))
    assert own == {"hash (hashlib.py)": 7, "write (aiohttp/http_writer.py)": 3, "[libc.so.6]": 2}
    assert total["handle (proxy/chat.py)"] == 7
    assert total["main (proxy/__main__.py)"] == 10


def test_soak_rss_trend_is_the_slope_of_its_second_half() -> None:
    """A flat second half reads 0 MiB/min whatever the first half did; a steady climb reads its rate."""
    mib = 2**20
    warm_then_flat = [(0.0, 50 * mib), (60.0, 200 * mib), (120.0, 200 * mib), (180.0, 200 * mib)]
    assert slope_mib_per_min(warm_then_flat) == pytest.approx(0.0)
    climbing = [(60.0 * i, (100 + 3 * i) * mib) for i in range(10)]
    assert slope_mib_per_min(climbing) == pytest.approx(3.0)


async def test_bench_console_times_the_image_list_at_both_sizes(redis_url: str) -> None:
    """``python -m bench console`` with 300 entries (and 100 as the reference): a table row per store
    and page, each with two timings and their ratio."""
    from bench.console import _run  # noqa: PLC0415 - the mode's module, as the CLI loads it

    text = await _run(redis_url, 300, 3, hit_pairs=0)
    rows = [line for line in text.splitlines() if line.startswith(("| memory", "| redis"))]
    assert len(rows) == 4
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[2]) > 0
        assert float(cells[3]) > 0
        assert float(cells[4]) == pytest.approx(float(cells[3]) / float(cells[2]), rel=0.05)


def test_rivals_report_says_cached_only_when_the_upstream_saw_no_call_during_hit_runs() -> None:
    """``bench rivals``: a side whose hit runs reached the upstream is reported as forwarding, not
    as a cache; the miss column is each side's p50 minus the direct p50 of its own blocks; the
    LiteLLM config names both bench models on the upstream, with Redis caching on."""

    def load(rps: float) -> LoadResult:
        return LoadResult("wrk", int(rps * 2), 2.0, 0, 0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)

    sides = [Side("A", "", {}), Side("B", "", {}), Side("ours", "", {})]
    bare, forward = Side("bare limit", "", {}), Side("bare-forward", "", {})
    for side, calls in zip([*sides, bare], (0, 57, 0, 0), strict=True):
        for scenario in ("image hit", "text hit"):
            side.best[scenario] = load(100.0)
            side.forwarded[scenario] = calls
    for side, added in zip([*sides, forward], (10.0, 1.0, 0.5, 0.25), strict=True):
        side.direct_ms = [1.0, 1.0, 1.0]
        side.miss_ms = [1.0 + added] * 3
    args = argparse.Namespace(runs=1, seconds=2.0, misses=3)
    text = render(sides, bare, forward, args, "now", "0 0 0")
    assert "| image (~2 MB) hit | 100 (cached) | 100 (forwarded, not cached) | 100 | 100 (cached) |" in text
    assert "| added latency per miss, p50 | +10.00 ms | +1.00 ms | +0.25 ms | +0.50 ms |" in text
    config = yaml.safe_load(litellm_config("http://127.0.0.1:9/v1", "redis://127.0.0.1:6390/0"))
    assert {m["model_name"] for m in config["model_list"]} == {TEXT_MODEL, IMAGE_MODEL}
    assert config["litellm_settings"] == {
        "cache": True,
        "cache_params": {"type": "redis", "host": "127.0.0.1", "port": 6390},
    }
