"""The simulated upstream in its own process, so it never steals CPU from the proxy being measured.

``python -m bench.upstream --port P --image-bytes N --latency S`` serves ``proxy.sim.simulator`` plus two
bench-only routes: ``GET /_stats`` (call counters, read by the single-flight scenario) and
``POST /_config`` (latency knobs, flipped between scenarios without a restart).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson
from aiohttp import web

from bench.procs import serve_child
from proxy.sim.simulator import STATE_KEY, SimulatorState, create_simulator_app

_KNOBS = ("latency_s", "image_latency_s")


async def _stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    payload = {
        "calls": dict(state.calls),
        "max_in_flight": state.max_in_flight,
        "latency_s": state.latency_s,
        "image_latency_s": state.image_latency_s,
    }
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


async def _configure(request: web.Request) -> web.Response:
    """Set latency knobs from a JSON object; unknown names are refused rather than ignored."""
    state = request.app[STATE_KEY]
    changes = orjson.loads(await request.read())
    unknown = sorted(set(changes) - set(_KNOBS))
    if unknown:
        return web.Response(status=400, text=f"unknown knobs: {unknown}")
    for name, value in changes.items():
        setattr(state, name, float(value))
    state.max_in_flight = state.in_flight
    return await _stats(request)


def build_app(state: SimulatorState) -> web.Application:
    """The simulator app with the bench routes added beside the ``/v1`` ones."""
    app = create_simulator_app(state)
    app.router.add_get("/_stats", _stats)
    app.router.add_post("/_config", _configure)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--image-bytes", type=int, default=1_500_000, help="approximate PNG size")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat answer")
    parser.add_argument("--image-latency", type=float, default=0.0, help="extra seconds for image models")
    args = parser.parse_args(argv)
    state = SimulatorState(
        latency_s=args.latency, image_latency_s=args.image_latency, image_bytes=args.image_bytes
    )
    serve_child(build_app(state), args.host, args.port, handler_cancellation=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
