"""Command line: ``llm-cache-proxy serve|demo|keys``. The only module that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
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

EXIT_UNSAFE_STATE_STORE = 3  # the state Redis may evict keys and budgets (proxy.state_store)

USAGE = """\
A caching reverse proxy for OpenAI-compatible APIs: point an OpenAI SDK's base_url at it.

commands (one line each; `llm-cache-proxy COMMAND --help` for a command's flags):
  serve   run the proxy (the default command); settings come from PROXY_* variables or flags
  demo    the proxy in front of a built-in simulated upstream: no API key or network needed
  keys    issue, list, update, revoke managed keys and purge the cache, via the admin API
"""

EPILOG = "Every setting is an environment variable (PROXY_PORT, PROXY_REDIS_URL, ...): see README.md."


def _common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that mean the same for ``serve`` and ``demo``."""
    parser.add_argument("--host", help="listen address (PROXY_HOST)")
    parser.add_argument("--port", type=int, help="listen port (PROXY_PORT)")
    parser.add_argument("--redis-url", help="redis:// URL; unset = in-memory (PROXY_REDIS_URL)")
    parser.add_argument("--cache-ttl", type=int, help="seconds (PROXY_CACHE_TTL)")
    parser.add_argument("--config", help="TOML file (PROXY_CONFIG)")
    parser.add_argument("--log-level", help="debug|info|warning (PROXY_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=["text", "json"], help="(PROXY_LOG_FORMAT)")


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    _common_flags(parser)
    parser.add_argument("--upstream-url", help="upstream base URL (PROXY_UPSTREAM_URL)")
    parser.add_argument(
        "--workers",
        type=int,
        help="processes sharing the port (PROXY_WORKERS); give them a shared PROXY_REDIS_URL",
    )


# Each worker is its own process: without Redis nothing is shared between them.
WORKERS_WITHOUT_REDIS = (
    "--workers %d without PROXY_REDIS_URL: each worker has its own in-memory cache and single "
    "flight%s (one prompt can be a MISS once per worker); set PROXY_REDIS_URL to share them"
)
# Appended when keys and budgets have no Redis either (no PROXY_STATE_REDIS_URL).
_PRIVATE_KEYS = (
    ", managed keys and budgets (a key created via the admin API exists only in the worker that answered)"
)

_DEMO_REFUSES = {
    "--workers": "the demo runs one process; use `serve --workers N` with a shared PROXY_REDIS_URL",
    "--upstream-url": "the demo always uses its built-in simulator; use `serve --upstream-url URL`",
}


class _Refuse(argparse.Action):
    """A flag a user may reasonably try that this command does not have: say why, exit 2."""

    def __init__(self, option_strings: Sequence[str], dest: str, why: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.why = why

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(f"{option_string} is not supported: {self.why}")


def build_parser() -> argparse.ArgumentParser:
    """The CLI; ``--help`` lists the commands a user runs, one line each."""
    parser = argparse.ArgumentParser(
        prog="llm-cache-proxy",
        usage="llm-cache-proxy [-h] {serve,demo,keys} ...",
        description=USAGE,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The commands are listed in USAGE; argparse's own listing would repeat them.
    sub = parser.add_subparsers(dest="command", metavar="", help=argparse.SUPPRESS)
    serve = sub.add_parser(
        "serve",
        prog="llm-cache-proxy serve",
        help="run the proxy",
        description="Run the proxy.",
        epilog=EPILOG,
    )
    _serve_flags(serve)
    # The demo always runs one process in front of its own simulator: it has no --workers and no
    # --upstream-url, so no flag is accepted and then ignored.
    demo = sub.add_parser(
        "demo",
        prog="llm-cache-proxy demo",
        help="run the proxy in front of a built-in simulated upstream",
        description="One proxy process in front of a built-in simulated upstream (text and image "
        "models); PROXY_UPSTREAM_URL and PROXY_WORKERS do not apply to it.",
    )
    _common_flags(demo)
    for flag, why in _DEMO_REFUSES.items():
        demo.add_argument(flag, action=_Refuse, help=argparse.SUPPRESS, why=why)
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
    from proxy.state_store import StateStoreUnsafe  # noqa: PLC0415

    configure_logging(settings.log_level, settings.log_format)
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        pass
    app = create_app(settings, multiprocess_dir=multiprocess_dir)
    try:
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
    except StateStoreUnsafe as exc:
        print(f"llm-cache-proxy: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_UNSAFE_STATE_STORE) from None


def serve(settings: Settings) -> int:
    """Run one worker in-process, or N worker processes on one port with shared metrics."""
    if settings.workers == 1:
        _run_worker(settings, None, reuse_port=False)
        return 0
    if settings.redis_url is None:
        configure_logging(settings.log_level, settings.log_format)
        private_keys = _PRIVATE_KEYS if settings.state_url is None else ""
        logging.getLogger("proxy").warning(WORKERS_WITHOUT_REDIS, settings.workers, private_keys)
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
