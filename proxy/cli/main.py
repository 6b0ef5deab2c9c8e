"""The command line: ``llm-cache-proxy serve|demo|keys`` (the environment comes in from ``__main__``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

from proxy.cli.serve import serve
from proxy.config import Settings

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
    parser.add_argument(
        "--models-ttl", type=int, help="seconds GET /v1/models is cached, 0 = off (PROXY_MODELS_TTL)"
    )
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
        "models_ttl",
        "workers",
        "config",
        "log_level",
        "log_format",
    )
    return {name: getattr(args, name, None) for name in names}


def main(argv: Sequence[str], env: MutableMapping[str, str]) -> int:
    """Run one command; ``env`` is the process environment (``os.environ``, from ``__main__``)."""
    argv = list(argv)
    if argv[:1] == ["keys"]:
        from proxy.cli.keys import main as keys_main  # noqa: PLC0415 - a client; needs no server

        return keys_main(argv[1:], env)
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    try:
        settings = Settings.from_env(env, **_overrides(args))
    except (ValueError, OSError) as exc:
        print(f"llm-cache-proxy: bad configuration: {exc}", file=sys.stderr)
        return 2
    if command == "serve":
        return serve(settings, env)
    if command == "demo":
        from proxy.cli.demo import demo  # noqa: PLC0415 - only the demo needs the simulator

        return demo(settings, sys.stdout)
    return 2
