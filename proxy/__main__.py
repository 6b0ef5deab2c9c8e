"""Command line: ``llm-cache-proxy serve|demo``. The only module that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from proxy.config import Settings
from proxy.logs import configure_logging


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (PROXY_HOST)")
    parser.add_argument("--port", type=int, help="listen port (PROXY_PORT)")
    parser.add_argument("--upstream-url", help="upstream base URL (PROXY_UPSTREAM_URL)")
    parser.add_argument("--redis-url", help="redis:// URL; unset = in-memory (PROXY_REDIS_URL)")
    parser.add_argument("--cache-ttl", type=int, help="seconds (PROXY_CACHE_TTL)")
    parser.add_argument("--workers", type=int, help="processes sharing the port (PROXY_WORKERS)")
    parser.add_argument("--config", help="TOML file (PROXY_CONFIG)")
    parser.add_argument("--log-level", help="debug|info|warning (PROXY_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=["text", "json"], help="(PROXY_LOG_FORMAT)")


def build_parser() -> argparse.ArgumentParser:
    """The CLI."""
    parser = argparse.ArgumentParser(prog="llm-cache-proxy", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the proxy")
    _serve_flags(serve)
    demo = sub.add_parser("demo", help="run the proxy in front of a built-in simulated upstream")
    _serve_flags(demo)
    sub.add_parser("keys", help="manage proxy keys via the admin API (see: keys --help)", add_help=False)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "host",
        "port",
        "upstream_url",
        "redis_url",
        "cache_ttl",
        "workers",
        "config",
        "log_level",
        "log_format",
    )
    return {name: getattr(args, name, None) for name in names}


def _run_worker(settings: Settings, multiprocess_dir: str | None, reuse_port: bool) -> None:
    """One serving process (also the only one when ``--workers 1``)."""
    # Imported here, not at the top: a spawned worker must import prometheus_client only after
    # PROMETHEUS_MULTIPROC_DIR is in its environment.
    from proxy.app import create_app  # noqa: PLC0415
    from proxy.server import serve as serve_app  # noqa: PLC0415

    configure_logging(settings.log_level, settings.log_format)
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        pass
    app = create_app(settings, multiprocess_dir=multiprocess_dir)
    asyncio.run(
        serve_app(
            app,
            host=settings.host,
            port=settings.port,
            header_timeout=settings.header_timeout,
            grace=settings.shutdown_grace,
            reuse_port=reuse_port,
            announce=lambda msg: print(msg, flush=True),
        )
    )


def serve(settings: Settings) -> int:
    """Run one worker in-process, or N worker processes on one port with shared metrics."""
    if settings.workers == 1:
        _run_worker(settings, None, reuse_port=False)
        return 0
    # prometheus-client picks its value class at import time: children must see the directory
    # in their environment before they import it, hence 'spawn' and the variable set here.
    metrics_dir = tempfile.mkdtemp(prefix="lcp-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_run_worker, args=(settings, metrics_dir, True), daemon=False)
        for _ in range(settings.workers)
    ]

    def _stop(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)

    # Installed before the workers start, so an early SIGTERM cannot orphan them.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return max((proc.exitcode or 0) for proc in procs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m proxy``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keys"]:
        from proxy.cli_keys import main as keys_main  # noqa: PLC0415 - a client; needs no server

        return keys_main(argv[1:], os.environ)
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    try:
        settings = Settings.from_env(os.environ, **_overrides(args))
    except (ValueError, OSError) as exc:
        print(f"llm-cache-proxy: bad configuration: {exc}", file=sys.stderr)
        return 2
    if command == "serve":
        return serve(settings)
    if command == "demo":
        from proxy.demo import demo  # noqa: PLC0415 - only the demo needs the simulator

        return demo(settings, sys.stdout)
    return 2


if __name__ == "__main__":
    # `python -m proxy` runs this file as `__main__`, a name spawned workers cannot import, so
    # `_run_worker` would not unpickle in them. Run the same code imported under its real name.
    from proxy.__main__ import main as _main

    sys.exit(_main())
