"""``llm-cache-proxy keys ...``: a thin client of the admin API, so operators need no curl recipes.

It talks HTTP to a running proxy (``--url`` / ``PROXY_ADMIN_URL``, default ``http://127.0.0.1:8080``)
with ``--token`` / ``PROXY_ADMIN_TOKEN``, and prints the JSON answer. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

DEFAULT_URL = "http://127.0.0.1:8080"


def build_parser() -> argparse.ArgumentParser:
    """The ``keys`` sub-commands."""
    parser = argparse.ArgumentParser(prog="llm-cache-proxy keys", description=__doc__)
    parser.add_argument("--url", help=f"proxy base URL (PROXY_ADMIN_URL, default {DEFAULT_URL})")
    parser.add_argument("--token", help="admin token (PROXY_ADMIN_TOKEN)")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="issue a key; its secret is printed once")
    create.add_argument("--alias", required=True)
    _settings_flags(create)
    sub.add_parser("list", help="every key with its spend")
    for name, text in (
        ("get", "one key: spend, remaining, reset time"),
        ("reset", "zero the current period's spend"),
        ("revoke", "refuse the key from now on"),
        ("usage", "the spend ledger summarised"),
    ):
        sub.add_parser(name, help=text).add_argument("key_id")
    update = sub.add_parser("update", help="change a key's settings")
    update.add_argument("key_id")
    update.add_argument("--alias")
    _settings_flags(update)
    enabled = update.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True)
    enabled.add_argument("--disable", dest="enabled", action="store_const", const=False)
    purge = sub.add_parser("purge", help="delete cached answers of a namespace, key or entry hash")
    target = purge.add_mutually_exclusive_group(required=True)
    target.add_argument("--namespace")
    target.add_argument("--key-id")
    target.add_argument("--key-hash")
    # Everything has its own flag (the API's {"all": true}): never a namespace pattern like "*".
    target.add_argument("--all", action="store_true", help="delete every cached answer of every tenant")
    return parser


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", type=float, help="USD per period")
    parser.add_argument("--period", choices=["day", "month", "total"])
    # "extend": `--models a b` and `--models a --models b` both allow a and b (the default
    # "store" kept only the last repeat).
    parser.add_argument(
        "--models", nargs="+", action="extend", metavar="GLOB", help="allowed models (globs); repeatable"
    )
    parser.add_argument("--namespace", dest="cache_namespace", help="cache namespace to share")
    parser.add_argument("--rpm", type=int, help="requests per minute")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    names = {
        "alias": "alias",
        "budget": "budget_usd",
        "period": "period",
        "models": "allowed_models",
        "cache_namespace": "cache_namespace",
        "rpm": "rpm",
        "enabled": "enabled",
    }
    return {api: getattr(args, flag) for flag, api in names.items() if getattr(args, flag, None) is not None}


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    action = args.action
    if action == "create":
        return "POST", "/admin/keys", _settings(args)
    if action == "list":
        return "GET", "/admin/keys", None
    if action == "update":
        return "PATCH", f"/admin/keys/{args.key_id}", _settings(args)
    if action == "purge":
        if args.all:
            return "POST", "/admin/cache/purge", {"all": True}
        target = {"namespace": args.namespace, "key_id": args.key_id, "key_hash": args.key_hash}
        return "POST", "/admin/cache/purge", {k: v for k, v in target.items() if v}
    paths = {
        "get": ("GET", ""),
        "reset": ("POST", "/reset"),
        "revoke": ("DELETE", ""),
        "usage": ("GET", "/usage"),
    }
    method, suffix = paths[action]
    return method, f"/admin/keys/{args.key_id}{suffix}", None


def main(argv: Sequence[str], env: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    """Run one admin call; 0 on a 2xx answer, 1 on an error answer, 2 on a usage or network error."""
    args = build_parser().parse_args(list(argv))
    token = args.token or env.get("PROXY_ADMIN_TOKEN")
    if not token:
        print("llm-cache-proxy keys: set --token or PROXY_ADMIN_TOKEN", file=sys.stderr)
        return 2
    base = (args.url or env.get("PROXY_ADMIN_URL") or DEFAULT_URL).rstrip("/")
    method, path, body = _request(args)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    call = urllib.request.Request(base + path, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(call, timeout=30) as response:  # noqa: S310 - operator-given URL
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        print(f"llm-cache-proxy keys: cannot reach {base}: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(json.loads(payload), indent=2), file=out)
    except ValueError:
        print(payload.decode(errors="replace"), file=out)
    return 0 if 200 <= status < 300 else 1
