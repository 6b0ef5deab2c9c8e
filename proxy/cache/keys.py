"""Pure cache-key computation: canonical JSON of the output-affecting request fields, hashed."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

KEY_VERSION = "v1"

# Fields that never change what the model answers. Everything else stays in the key, so an
# unknown parameter can never make two different requests collide.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier"})

# Namespace characters: no ":" (it ends the namespace in an entry key) and no "." (it separates an
# X-Cache-Namespace sub-namespace), so "team", "team:x" and "team.x" can never be confused.
_NAMESPACE_SAFE = re.compile(r"[^A-Za-z0-9_-]")

# Deepest nesting of arrays/objects a request may have. Real requests (tool schemas included) stay
# far below; a deeper one is refused with 400 rather than walked (the walks here would recurse).
MAX_DEPTH = 128


class NestingTooDeep(ValueError):
    """A JSON value nests deeper than ``MAX_DEPTH``."""


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Raise ``NestingTooDeep`` when ``value`` nests containers deeper than ``limit`` (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            raise NestingTooDeep(f"nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _normalise(value: Any, depth: int = 0) -> Any:
    """Integral floats become ints (``1.0`` and ``1`` are the same temperature to the upstream)."""
    if depth > MAX_DEPTH:
        raise NestingTooDeep(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _normalise(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, depth + 1) for v in value]
    return value


def _has_float(value: Any) -> bool:
    """Whether a float is anywhere in ``value`` (iterative: any depth is safe)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def canonical_request(body: Mapping[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no whitespace, UTF-8) of the fields that affect the output.

    Only top-level parameters carry floats in practice, so the deep walk is skipped for the
    (possibly multi-megabyte) ``messages`` unless they hold a float.
    """
    kept: dict[str, Any] = {}
    for key, value in body.items():
        if key in IGNORED_FIELDS:
            continue
        kept[key] = _normalise(value) if _has_float(value) else value
    try:
        return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        # orjson refuses integers beyond 64 bits; the stdlib encoder handles them identically.
        return json.dumps(
            kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")


def cache_hash(body: Mapping[str, Any], namespace: str) -> str:
    """The entry's identity: sha256 over version, namespace and the canonical request."""
    digest = hashlib.sha256()
    digest.update(f"{KEY_VERSION}\x00{namespace}\x00".encode())
    digest.update(canonical_request(body))
    return digest.hexdigest()


def safe_namespace(raw: str) -> str:
    """A namespace usable inside a Redis key: readable when short and plain, hashed otherwise.

    Plain means letters, digits, ``_`` and ``-`` only, so the result never contains the ``:``
    or ``.`` that structure an entry key (``{p}:r1:{namespace}[.{sub}]:{digest}``).
    """
    cleaned = _NAMESPACE_SAFE.sub("_", raw)
    if cleaned == raw and 0 < len(raw) <= 64:
        return raw
    return "h-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def bearer_namespace(bearer: str) -> str:
    """Per-tenant namespace derived from the caller's secret; the secret itself is never stored."""
    return "k-" + hashlib.sha256(bearer.encode("utf-8")).hexdigest()[:32]
