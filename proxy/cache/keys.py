"""Which entry a request maps to (pure): the namespace rules and the canonical digest.

Namespaces are the one place tenancy is decided: a pass-through bearer's ``k-<hash>``, a managed
key's ``m-<id>`` or the ``n-<name>`` it shares, or ``shared``, each optionally with an
``X-Cache-Namespace`` sub-namespace. The digest is sha256 over canonical JSON of the fields that
can change an answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.config import CacheScope
from proxy.keys.settings import ManagedKey, hash_secret

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


def cache_hash(body: Mapping[str, Any], namespace: str, scope: str = "") -> str:
    """The entry's identity: sha256 over version, namespace, the endpoint's ``scope`` and the
    canonical request. Chat's scope is "" and leaves the v1 keys exactly as they always were."""
    digest = hashlib.sha256()
    digest.update(f"{KEY_VERSION}\x00{namespace}\x00".encode())
    if scope:
        digest.update(f"{scope}\x00".encode())
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
    return "k-" + hash_secret(bearer)[:32]


def passthrough_namespace(scope: CacheScope, bearer: str | None, requested: str | None) -> str | None:
    """Where a pass-through caller's entries live; None means the request is not cached at all.

    A request without a bearer never gets or makes cached answers: nothing would stop it from
    reading what a paying tenant stored.
    """
    if bearer is None:
        return None
    base = "shared" if scope == "shared" else bearer_namespace(bearer)
    return f"{base}.{safe_namespace(requested)}" if requested else base


def managed_namespace(key: ManagedKey, scope: CacheScope, requested: str | None) -> str:
    """Cache namespace of a managed key: its own, or the one it names (shared with every key naming it).

    The ``m-``/``n-`` prefixes keep managed namespaces apart from pass-through ones (``k-<hash>``);
    ``safe_namespace`` never returns a ``.``, so ``m-a.b`` is always key ``a`` + sub-namespace ``b``.
    """
    if scope == "shared":
        base = "shared"
    elif key.cache_namespace:
        base = "n-" + safe_namespace(key.cache_namespace)
    else:
        base = "m-" + safe_namespace(key.id)
    return f"{base}.{safe_namespace(requested)}" if requested else base
