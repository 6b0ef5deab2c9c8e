"""Managed-key values and their validation: what a key is, how its settings are checked.

Pure: no I/O. The stores (``proxy.keys.store`` in memory, ``proxy.keys.redis``) build on it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase

from proxy.keys.periods import Period, parse_period

SECRET_PREFIX = "sk-lcp-"  # noqa: S105  # a public marker, not a secret
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_UPDATABLE = frozenset(
    {"alias", "budget_micro", "period", "allowed_models", "cache_namespace", "rpm", "enabled", "endpoints"}
)
# A key's endpoint list names registered endpoints only (checked by ``check_endpoints``); these
# bounds keep a malformed list from becoming a large record before that check runs.
MAX_ENDPOINTS = 32
MAX_ENDPOINT_CHARS = 64


class InvalidKeySettings(ValueError):
    """A key setting from config or the admin API has the wrong type or value."""


def hash_secret(secret: str) -> str:
    """The sha256 hex digest of a secret: the only form in which a bearer or key is ever stored,
    compared, logged or turned into a name (managed keys, verified bearers, cache namespaces)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_secret() -> str:
    """A fresh key: `sk-lcp-` and 43 URL-safe characters (256 bits of randomness)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)[:43]


@dataclass(frozen=True, slots=True)
class ManagedKey:
    """A proxy-issued key's settings; never holds the secret."""

    id: str
    alias: str
    budget_micro: int | None  # None: unlimited
    period: Period
    allowed_models: tuple[str, ...]  # fnmatch globs, case-sensitive; empty allows every model
    cache_namespace: str | None
    rpm: int | None
    enabled: bool
    created_at: datetime
    revoked_at: datetime | None = None
    # Paid endpoints (``Endpoint.name``: "chat.completions", "embeddings", ...) the key may call;
    # None (the default, and every record written before the field existed) allows all of them.
    endpoints: tuple[str, ...] | None = None

    def allows_endpoint(self, name: str) -> bool:
        """True if the key may call the paid endpoint ``name``."""
        return self.endpoints is None or name in self.endpoints

    def allows_model(self, model: str) -> bool:
        """True if the key may call `model`."""
        return not self.allowed_models or any(fnmatchcase(model, g) for g in self.allowed_models)

    @property
    def usable(self) -> bool:
        """Enabled and not revoked."""
        return self.enabled and self.revoked_at is None


@dataclass(frozen=True, slots=True)
class StaticKey:
    """A key declared in the TOML config, identified by the sha256 of its secret."""

    id: str
    alias: str
    secret_sha256: str
    budget_micro: int | None = None
    period: Period = "month"
    allowed_models: tuple[str, ...] = ()
    cache_namespace: str | None = None
    rpm: int | None = None
    enabled: bool = True
    endpoints: tuple[str, ...] | None = None

    @classmethod
    def from_mapping(cls, entry: Mapping[str, object]) -> StaticKey:
        """Parse one `[[keys]]` table; a plaintext `secret` is hashed here and then dropped.

        Accepts id and/or alias, secret or secret_sha256, budget_usd or budget_micro, period
        (default "month"), allowed_models, cache_namespace, rpm, enabled, endpoints.
        """
        plain, digest = entry.get("secret"), entry.get("secret_sha256")
        if (plain is None) == (digest is None):
            raise InvalidKeySettings("a key needs exactly one of `secret` or `secret_sha256`")
        if plain is not None:
            digest = hash_secret(_str(plain, "secret"))
        digest = _str(digest, "secret_sha256").lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise InvalidKeySettings("secret_sha256 must be 64 hex digits")
        key_id = _opt_str(entry.get("id"), "id") or _opt_str(entry.get("alias"), "alias")
        if not key_id:
            raise InvalidKeySettings("a key needs an `id` or an `alias`")
        settings = {k: v for k, v in entry.items() if k in _UPDATABLE}
        settings.setdefault("alias", key_id)
        if entry.get("budget_usd") is not None:
            settings["budget_micro"] = usd_to_micro(entry["budget_usd"])
        # validate_settings checked every field's type.
        return cls(id=key_id, secret_sha256=digest, **validate_settings(settings))  # type: ignore[arg-type]


def usd_to_micro(usd: object) -> int:
    """A USD amount from config or the admin API as exact integer micro-USD."""
    # Decimal, not float arithmetic: 1.1 USD must be exactly 1_100_000 micro-USD.
    error = InvalidKeySettings("budget_usd must be a non-negative number")
    if isinstance(usd, bool) or not isinstance(usd, int | float | str):
        raise error
    try:
        micro = Decimal(str(usd)) * 1_000_000
    except InvalidOperation:
        raise error from None
    if not micro.is_finite() or micro < 0:
        raise error
    return int(micro)


def _str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidKeySettings(f"{name} must be a string")
    return value


def _opt_str(value: object, name: str) -> str | None:
    return None if value is None else _str(value, name)


def _opt_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidKeySettings(f"{name} must be a non-negative integer or null")
    return value


def validate_settings(changes: Mapping[str, object]) -> dict[str, object]:
    """Check field names and types of a settings change; normalise model lists to tuples."""
    out: dict[str, object] = {}
    for name, value in changes.items():
        if name not in _UPDATABLE:
            raise InvalidKeySettings(f"{name!r} cannot be changed")
        if name == "alias":
            out[name] = _str(value, name)
        elif name == "period":
            try:
                out[name] = parse_period(_str(value, name))
            except ValueError as exc:
                raise InvalidKeySettings(str(exc)) from None
        elif name == "allowed_models":
            models = [value] if isinstance(value, str) else value
            if not isinstance(models, list | tuple) or not all(isinstance(m, str) for m in models):
                raise InvalidKeySettings("allowed_models must be a list of strings")
            out[name] = tuple(models)
        elif name == "endpoints":
            out[name] = _endpoints(value)
        elif name == "cache_namespace":
            out[name] = _opt_str(value, name)
        elif name == "enabled":
            if not isinstance(value, bool):
                raise InvalidKeySettings("enabled must be true or false")
            out[name] = value
        else:
            out[name] = _opt_int(value, name)
    return out


def _endpoints(value: object) -> tuple[str, ...] | None:
    """A key's endpoint list: null (every paid endpoint) or names, trimmed, lower-cased, deduplicated."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    error = InvalidKeySettings(f"endpoints must be null or a list of at most {MAX_ENDPOINTS} endpoint names")
    if not isinstance(names, list | tuple) or len(names) > MAX_ENDPOINTS:
        raise error
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_ENDPOINT_CHARS:
            raise error
        clean = name.strip().lower()
        if clean not in out:
            out.append(clean)
    return tuple(out)


def check_endpoints(endpoints: tuple[str, ...] | None, known: Collection[str]) -> None:
    """Refuse a name that is not a registered paid endpoint, listing the ones that are.

    The list of valid names belongs to the running app (``proxy.app.ENDPOINTS``), so the admin API
    and the config loader check against it; the key store only checks the shape.
    """
    unknown = [name for name in endpoints or () if name not in known]
    if unknown:
        raise InvalidKeySettings(
            f"unknown endpoint(s) {', '.join(repr(n) for n in unknown)}; "
            f"valid endpoints: {', '.join(sorted(known))}"
        )
