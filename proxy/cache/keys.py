"""Which entry a request maps to (pure): the namespace rules and the canonical digest.

Namespaces are the one place tenancy is decided: a pass-through bearer's ``k-<hash>``, a managed
key's ``m-<id>`` or the ``n-<name>`` it shares, or ``shared``, each optionally with an
``X-Cache-Namespace`` sub-namespace. The digest is BLAKE3 over canonical JSON of the fields that
can change an answer (``request_digest``), bound to the namespace and the endpoint's scope
(``entry_digest``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import orjson
from blake3 import blake3

from proxy.config import CacheScope
from proxy.keys.settings import ManagedKey, hash_secret

# v2: BLAKE3 (v1 was sha256 over the same canonical JSON). Entries stored under v1 keys are simply
# never found again and expire with their TTL.
KEY_VERSION = "v2"

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


def request_digest(body: Mapping[str, Any]) -> bytes:
    """BLAKE3 of the canonical request: what the request asks, whoever asks it.

    BLAKE3, not sha256: a vision-edit request carries a ~2 MB data URL, and hashing it was the
    largest cost of such a hit (per 2 MB on this machine: sha256 1.1-1.3 ms, BLAKE3 0.3-0.5 ms).
    It stays collision-resistant: with ``PROXY_CACHE_SCOPE=shared`` tenants share entries, so a
    chosen collision would be cache poisoning (a fast non-cryptographic hash would not do).
    """
    return blake3(canonical_request(body)).digest()


def entry_digest(request: bytes, namespace: str, scope: str = "") -> str:
    """The entry's identity (``X-Cache-Key``): BLAKE3 over the key version, the namespace, the
    endpoint's ``scope`` and ``request`` (a ``request_digest``). A collision here needs one of
    BLAKE3 itself, so the two-level form is as collision-resistant as hashing everything at once,
    and the request's digest can be remembered per body (``pipeline.memo``) while the namespace
    differs per caller."""
    digest = blake3(f"{KEY_VERSION}\x00{namespace}\x00{scope}\x00".encode())
    digest.update(request)
    return digest.hexdigest()


def cache_hash(body: Mapping[str, Any], namespace: str, scope: str = "") -> str:
    """``entry_digest`` of ``body``'s ``request_digest``: the entry's identity in ``namespace``."""
    return entry_digest(request_digest(body), namespace, scope)


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


def passthrough_namespace(
    scope: CacheScope, bearer: str | None, requested: str | None, secret: str | None = None
) -> str | None:
    """Where a pass-through caller's entries live; None means the request is not cached at all.

    A request without a bearer never gets or makes cached answers: nothing would stop it from
    reading what a paying tenant stored. ``secret``: ``hash_secret(bearer)`` when the caller
    already has it (the flow hashes a bearer once per request).
    """
    if bearer is None:
        return None
    if scope == "shared":
        base = "shared"
    else:
        base = bearer_namespace(bearer) if secret is None else "k-" + secret[:32]
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
