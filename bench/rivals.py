"""``python -m bench rivals``: LiteLLM's proxy and Portkey's gateway beside llm-cache-proxy, in one run.

The issue-15 table, measured by the project's bench: each side in front of the same simulated
upstream (``bench.upstream``) and the same private ``redis-server``, loaded by the same wrk
settings (one thread, 8 connections) with the same request bodies, sides alternated run by run
(best of ``--runs`` runs of ``--seconds`` each), plus the bare limits of ``bench.bare``:

- image hit (a ~2 MB chat answer with a PNG) and text hit: req/s; during each hit run the
  upstream's chat counter must not move, else the side is marked "forwarded" (not served from a
  cache);
- added latency of a miss, p50: sequential unique prompts in blocks per side (sides rotating),
  each paired with the same kind of call straight to the upstream in the same block: the side's
  p50 minus the direct p50 of its own blocks.

The rivals are installed on first use under ``bench/out/rivals/`` (not into the project's venv):
LiteLLM ``litellm[proxy]`` in its own venv with Redis caching on (``cache: true``, type redis) and
a master key; Portkey's open-source gateway with npm, asked for its simple cache
(``x-portkey-config: {"cache": {"mode": "simple"}}``). The open-source gateway answers
``x-portkey-cache-status: DISABLED``: it has no cache store of its own (the hosted product plugs
one in), so its hit columns are forwarding numbers; the report says so from what was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import orjson

from bench.context import CHAT_PATH
from bench.load import LoadResult, LoadSpec, run_load
from bench.loadgen import percentile
from bench.machine import loadavg
from bench.matrix import ProxyConfig
from bench.payloads import BEARER, HEADERS, IMAGE_MODEL, TEXT_MODEL, chat_body
from bench.procs import Child, child_env, free_port, spawn, stop
from bench.references import start_bare
from bench.runner import log
from bench.sections import put_section
from bench.stack import Stack, Timer, common_flags, stack, stamp

LITELLM_VERSION = "1.108.7"
PORTKEY_VERSION = "1.15.2"
_MISS_BLOCK = 10


@dataclass(slots=True)
class Side:
    """One server under load: where, with which headers, and what it served."""

    name: str
    url: str  # the chat completions URL
    headers: Mapping[str, str]
    best: dict[str, LoadResult] = field(default_factory=dict)
    runs: dict[str, list[float]] = field(default_factory=dict)
    forwarded: dict[str, int] = field(default_factory=dict)  # upstream chat calls during hit runs
    body_bytes: dict[str, int] = field(default_factory=dict)
    miss_ms: list[float] = field(default_factory=list)
    direct_ms: list[float] = field(default_factory=list)  # the upstream itself, in this side's blocks
    direct_url: str = ""
    problems: list[str] = field(default_factory=list)


def rivals_dir(out: Path) -> Path:
    """Where the rivals are installed (ignored by git with the rest of ``bench/out``)."""
    return out / "rivals"


async def _run_checked(*command: str, cwd: Path | None = None) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(
            f"bench rivals: {' '.join(command)} failed:\n{output.decode(errors='replace')[-2000:]}"
        )


async def ensure_litellm(root: Path) -> Path:
    """The ``litellm`` command of a venv holding ``litellm[proxy]`` (created on first use)."""
    venv = root / "litellm-venv"
    command = venv / "bin" / "litellm"
    if not command.exists():
        log(f"bench rivals: installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once)")
        await _run_checked(sys.executable, "-m", "venv", str(venv))
        await _run_checked(str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}")
    return command


async def ensure_portkey(root: Path) -> Path:
    """The gateway's ``start-server.js`` (npm-installed on first use; needs node and npm)."""
    home = root / "portkey"
    script = home / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        if shutil.which("npm") is None or shutil.which("node") is None:
            raise SystemExit(
                "bench rivals: Portkey's gateway needs node and npm (apt-get install nodejs npm)"
            )
        log(f"bench rivals: installing @portkey-ai/gateway@{PORTKEY_VERSION} into {home} (once)")
        home.mkdir(parents=True, exist_ok=True)
        await _run_checked("npm", "init", "-y", cwd=home)
        await _run_checked(
            "npm", "install", "--no-audit", "--no-fund", f"@portkey-ai/gateway@{PORTKEY_VERSION}", cwd=home
        )
    return script


def litellm_config(upstream_v1: str, redis_url: str) -> str:
    """LiteLLM's proxy config: both bench models on the simulated upstream, Redis caching on."""
    redis = urlparse(redis_url)
    models = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_base": upstream_v1,
                "api_key": "sk-bench-upstream",
            },
        }
        for name in (TEXT_MODEL, IMAGE_MODEL)
    ]
    config = {
        "model_list": models,
        "litellm_settings": {
            "cache": True,
            "cache_params": {"type": "redis", "host": redis.hostname, "port": redis.port},
        },
        "general_settings": {"master_key": BEARER},
    }
    return orjson.dumps(config).decode()  # YAML is a superset of JSON


async def start_litellm(command: Path, bench: Stack, out: Path) -> Child:
    """LiteLLM's proxy, one worker, on a free port."""
    port = free_port()
    config = out / "litellm-config.yaml"
    config.write_text(litellm_config(bench.upstream.base + "/v1", bench.setup.redis_url))
    # The cost map is not fetched from GitHub at start (no internet here; it would only retry).
    env = child_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    args = ["--config", str(config), "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"]
    base = f"http://127.0.0.1:{port}"
    return await spawn(
        "litellm",
        args,
        env,
        out / "logs" / "litellm.log",
        base,
        "/health/liveliness",
        program=str(command),
        ready_s=120,
    )


async def start_portkey(script: Path, out: Path) -> Child:
    """Portkey's open-source gateway (node) on a free port."""
    port = free_port()
    env = child_env({"NODE_ENV": "production"})
    base = f"http://127.0.0.1:{port}"
    node = shutil.which("node") or "node"
    return await spawn(
        "portkey",
        [str(script), f"--port={port}", "--headless"],
        env,
        out / "logs" / "portkey.log",
        base,
        "/",
        program=node,
        ready_s=60,
    )


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        data = await response.read()
        return response.status, data, time.perf_counter() - started


async def _hit_runs(
    bench: Stack, sides: Sequence[Side], scenario: str, body: bytes, args: argparse.Namespace
) -> None:
    """Warm every side (two identical requests), then alternate the sides' load runs."""
    async with aiohttp.ClientSession() as session:
        for side in sides:
            statuses = []
            for _ in range(2):
                status, data, _ = await _post(session, side.url, body, side.headers)
                statuses.append(status)
            side.body_bytes[scenario] = len(data)
            if statuses != [200, 200]:
                side.problems.append(f"{scenario}: warm-up answered {statuses}")
    for _ in range(args.runs):
        for side in sides:
            before = await _settled(bench)
            spec = LoadSpec(side.url, body, side.headers, args.seconds, 8)
            result = await run_load(spec, bench.opts.generator)
            upstream_calls = await _settled(bench) - before
            side.forwarded[scenario] = side.forwarded.get(scenario, 0) + upstream_calls
            side.runs.setdefault(scenario, []).append(result.rps)
            if result.errors or result.non2xx:
                side.problems.append(f"{scenario}: {result.errors} errors, {result.non2xx} non-2xx")
            if scenario not in side.best or result.rps > side.best[scenario].rps:
                side.best[scenario] = result
            log(
                f"[{side.name:22}] {scenario:10} {result.rps:10,.0f} req/s  p50 {result.p50_ms:7.2f} ms"
                f"  {result.requests} requests, {upstream_calls} upstream calls"
            )


async def _settled(bench: Stack) -> int:
    """The upstream's chat counter once it stops moving (a forwarding side's last requests may
    still be upstream when wrk stops: they must not count against the next side)."""
    last = await bench.control.chat_calls()
    while True:
        await asyncio.sleep(0.3)
        now = await bench.control.chat_calls()
        if now == last:
            return now
        last = now


async def _misses(sides: Sequence[Side], samples: int, block: int, tag: str) -> None:
    """Sequential unique prompts in blocks of ``block`` per side, the sides' order rotating from
    round to round; inside a block each miss is paired with one straight to the upstream, so each
    side's added latency is against the direct calls made in its own blocks (a side's background
    work after its block must not be charged to the next side: a pause separates blocks)."""
    async with aiohttp.ClientSession() as session:
        for round_ in range(-1, -(-samples // block)):  # round -1 warms up, unrecorded
            shift = round_ % len(sides)
            for side in sides[shift:] + sides[:shift]:
                for j in range(block):
                    order = (False, True) if j % 2 else (True, False)
                    for straight in order:
                        url = side.direct_url if straight else side.url
                        body = chat_body(TEXT_MODEL, f"rivals miss {tag} {side.name} {round_} {j} {straight}")
                        status, _, seconds = await _post(session, url, body, side.headers)
                        if status != 200:
                            side.problems.append(f"miss answered {status}")
                        elif round_ >= 0:
                            (side.direct_ms if straight else side.miss_ms).append(seconds * 1000)
                await asyncio.sleep(0.3)


def render(
    sides: Sequence[Side],
    bare: Side,
    forward: Side,
    args: argparse.Namespace,
    when: str,
    load: str,
    generator: str = "wrk",
) -> str:
    """The section: the issue's table with this run's figures."""
    direct_p50 = percentile(sorted(d for side in [*sides, forward] for d in side.direct_ms), 50)

    def hit(side: Side, scenario: str) -> str:
        best = side.best.get(scenario)
        if best is None:
            return "-"
        how = (
            ""
            if side is bare
            else (" (cached)" if side.forwarded.get(scenario) == 0 else " (forwarded, not cached)")
        )
        return f"{best.rps:,.0f}{how}"

    def added(side: Side) -> str:
        if not side.miss_ms or not side.direct_ms:
            return "-"
        return f"+{percentile(sorted(side.miss_ms), 50) - percentile(sorted(side.direct_ms), 50):.2f} ms"

    columns = [*sides[:2], bare, sides[2]]
    head = "| | " + " | ".join(side.name for side in columns) + " |"
    lines = [
        "## Side by side: LiteLLM, Portkey, the bare limit",
        "",
        f"`python -m bench rivals` on {when} ({args.runs} alternated runs of {args.seconds:g} s per",
        f"side, best reported; {generator}, 1 thread, 8 connections; {args.misses} sequential misses",
        f"per side; load average {load}).",
        "Every side is in front of the same simulated upstream and private Redis, with the same bodies.",
        "",
        head,
        "|---|" + "---:|" * len(columns),
        "| image (~2 MB) hit | " + " | ".join(hit(side, "image hit") for side in columns) + " |",
        "| text hit | " + " | ".join(hit(side, "text hit") for side in columns) + " |",
        "| added latency per miss, p50 | "
        + " | ".join(added(forward if side is bare else side) for side in columns)
        + " |",
        "",
        "The bare column: `bare-bytes` for hits (ready bytes), `bare-forward` for the miss (aiohttp's",
        f"client, nothing else). Direct upstream miss p50 (all blocks): {direct_p50:.3f} ms. (cached):",
        "the upstream's chat counter did not move during that side's hit runs; (forwarded, not cached):",
        "it did.",
        "",
        "| side | image hit answer bytes | text hit answer bytes | all runs image (req/s) "
        "| all runs text (req/s) | problems |",
        "|---|---:|---:|---|---|---|",
    ]
    for side in [*sides, bare]:
        runs = {
            k: "/".join(f"{v:,.0f}" for v in side.runs.get(k, [])) or "-" for k in ("image hit", "text hit")
        }
        sizes = f"{side.body_bytes.get('image hit', 0):,} | {side.body_bytes.get('text hit', 0):,}"
        problems = "; ".join(sorted(set(side.problems))) or "none"
        lines.append(f"| {side.name} | {sizes} | {runs['image hit']} | {runs['text hit']} | {problems} |")
    lines += [
        "",
        "Portkey's open-source gateway answers `x-portkey-cache-status: DISABLED` even when asked for its",
        "simple cache: the cache store is not part of the open-source build. LiteLLM caches in Redis",
        "(`cache: true`).",
    ]
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> int:
    timer = Timer()
    before = loadavg()
    root = rivals_dir(args.out)
    litellm_cmd, portkey_js = await ensure_litellm(root), await ensure_portkey(root)
    async with contextlib.AsyncExitStack() as resources:
        bench = await resources.enter_async_context(stack(args.out, args.image_bytes, args.loadgen))
        proxy = await resources.enter_async_context(bench.proxy(ProxyConfig(1, "redis"), "rivals"))
        bare_child = await start_bare(
            bench.setup.redis_url,
            f"lcpbench:{bench.opts.run_id}:rivals-bare:",
            args.out / "logs" / "rivals-bare.log",
            bench.upstream.base,
        )
        resources.push_async_callback(stop, bare_child)
        litellm = await start_litellm(litellm_cmd, bench, args.out)
        resources.push_async_callback(stop, litellm)
        portkey = await start_portkey(portkey_js, args.out)
        resources.push_async_callback(stop, portkey)
        portkey_headers = {
            **HEADERS,
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": bench.upstream.base + "/v1",
            "x-portkey-config": '{"cache":{"mode":"simple"}}',
        }
        sides = [
            Side(f"LiteLLM {LITELLM_VERSION}", litellm.base + CHAT_PATH, HEADERS),
            Side(f"Portkey gateway {PORTKEY_VERSION}", portkey.base + CHAT_PATH, portkey_headers),
            Side("llm-cache-proxy", proxy.target.chat_url, HEADERS),
        ]
        bare = Side("bare limit", "", HEADERS)
        forward = Side("bare-forward", bare_child.base + "/forward" + CHAT_PATH, HEADERS)
        tag = bench.opts.run_id
        bodies = {
            "image hit": chat_body(IMAGE_MODEL, f"rivals image {tag}"),
            "text hit": chat_body(TEXT_MODEL, f"rivals text {tag}"),
        }
        async with aiohttp.ClientSession() as session:
            for scenario, body in bodies.items():
                # The bare reference answers the proxy's own hit bytes for the same request.
                _, answer, _ = await _post(session, sides[2].url, body, HEADERS)
                name = scenario.replace(" ", "_")
                async with session.put(f"{bare_child.base}/_body/{name}", data=answer) as reply:
                    reply.raise_for_status()
        for scenario, body in bodies.items():
            bare.url = f"{bare_child.base}/bytes/{scenario.replace(' ', '_')}"
            await _hit_runs(bench, [*sides, bare], scenario, body, args)
        for side in [*sides, forward]:
            side.direct_url = bench.upstream.base + CHAT_PATH
        await _misses([*sides, forward], args.misses, _MISS_BLOCK, tag)
        text = render(
            sides,
            bare,
            forward,
            args,
            stamp(),
            f"{before} / {loadavg()}",
            bench.opts.generator,
        )
    put_section(args.results, "rivals", text)
    log(text)
    log(f"bench rivals: wrote a section of {args.results} in {timer.seconds:.0f} s")
    return 1 if any(side.problems for side in [*sides, bare, forward]) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench rivals``."""
    parser = argparse.ArgumentParser(prog="python -m bench rivals", description=__doc__)
    common_flags(parser)
    parser.add_argument("--runs", type=int, default=3, help="alternated load runs per side (best reported)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--misses", type=int, default=100, help="sequential misses per side")
    return asyncio.run(_run(parser.parse_args(argv)))
