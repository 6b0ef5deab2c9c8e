"""``llm-cache-proxy serve``: one worker in this process, or N spawned workers on one port."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import MutableMapping

from proxy.config import Settings
from proxy.obs.logs import configure_logging

EXIT_UNSAFE_STATE_STORE = 3  # the state Redis may evict keys and budgets (proxy.budget.state_store)

# Each worker is its own process: without Redis nothing is shared between them.
WORKERS_WITHOUT_REDIS = (
    "--workers %d without PROXY_REDIS_URL: each worker has its own in-memory cache and single "
    "flight%s (one prompt can be a MISS once per worker); set PROXY_REDIS_URL to share them"
)
# Appended when keys and budgets have no Redis either (no PROXY_STATE_REDIS_URL).
_PRIVATE_KEYS = (
    ", managed keys and budgets (a key created via the admin API exists only in the worker that answered)"
)


def _run_worker(settings: Settings, multiprocess_dir: str | None, reuse_port: bool) -> None:
    """One serving process (also the only one when ``--workers 1``)."""
    # Imported here, not at the top: a spawned worker must import prometheus_client only after
    # PROMETHEUS_MULTIPROC_DIR is in its environment.
    from proxy.app import create_app  # noqa: PLC0415
    from proxy.budget.state_store import StateStoreUnsafe  # noqa: PLC0415
    from proxy.web.server import serve as serve_app  # noqa: PLC0415

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


def serve(settings: Settings, env: MutableMapping[str, str]) -> int:
    """Run one worker in-process, or N worker processes on one port with shared metrics."""
    if settings.workers == 1:
        _run_worker(settings, None, reuse_port=False)
        return 0
    if settings.redis_url is None:
        configure_logging(settings.log_level, settings.log_format)
        private_keys = _PRIVATE_KEYS if settings.state_url is None else ""
        logging.getLogger("proxy").warning(WORKERS_WITHOUT_REDIS, settings.workers, private_keys)
    # prometheus-client picks its value class at import time: children must see the directory
    # in their environment before they import it, hence 'spawn' and the variable set here (``env``
    # is ``os.environ``: spawned children inherit it).
    metrics_dir = tempfile.mkdtemp(prefix="lcp-metrics-")
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # os.environ, from __main__
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
