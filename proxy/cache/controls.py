"""The caller's cache controls: ``Cache-Control``, ``X-Cache-TTL`` and ``X-Cache-Namespace``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.errors import ProxyError, bad_request

MAX_CACHE_TTL = 365 * 86400


@dataclass(frozen=True, slots=True)
class CacheControls:
    """Per-request cache behaviour from ``Cache-Control``, ``X-Cache-TTL`` and ``X-Cache-Namespace``."""

    lookup: bool = True
    store: bool = True
    max_age: int | None = None
    ttl: int | None = None
    namespace: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> CacheControls:
        """Parse the headers; malformed values are a 400, not silently ignored."""
        if (
            "Cache-Control" not in headers
            and "X-Cache-TTL" not in headers
            and "X-Cache-Namespace" not in headers
        ):
            return _DEFAULT  # most requests send none of them (immutable: shared)
        lookup, store, max_age = True, True, None
        for directive in headers.get("Cache-Control", "").split(","):
            name, _, value = directive.strip().lower().partition("=")
            if name == "no-cache":
                lookup = False
            elif name == "no-store":
                store = False
            elif name == "max-age":
                max_age = _non_negative_int(value.strip('"'), "Cache-Control: max-age")
        ttl = None
        if "X-Cache-TTL" in headers:
            ttl = _non_negative_int(headers["X-Cache-TTL"], "X-Cache-TTL")
            if not 0 < ttl <= MAX_CACHE_TTL:
                raise bad_request(f"X-Cache-TTL must be between 1 and {MAX_CACHE_TTL} seconds.")
        namespace = headers.get("X-Cache-Namespace")
        if namespace is not None and not 0 < len(namespace) <= 128:
            raise bad_request("X-Cache-Namespace must be 1 to 128 characters.")
        return cls(lookup, store, max_age, ttl, namespace)


_DEFAULT = CacheControls()


def _non_negative_int(raw: str, what: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ProxyError(400, f"{what} must be a whole number of seconds.") from None
    if value < 0:
        raise ProxyError(400, f"{what} must not be negative.")
    return value
