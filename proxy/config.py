"""Settings: one frozen value read once from an injectable mapping (only ``__main__`` passes os.environ)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

CacheScope = Literal["key", "shared"]

# Bearer tokens the operator chooses (admin, metrics): shorter ones are guessable, so refused at start.
MIN_TOKEN_CHARS = 32


@dataclass(frozen=True, slots=True)
class Secret:
    """A string that never shows itself in ``repr``/logs."""

    value: str

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the proxy. Field names map to ``PROXY_<NAME>`` environment variables."""

    upstream_url: str = "https://api.llmgateway.io/v1"
    upstream_api_key: Secret | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str | None = None
    # Keys, budgets, reservations, the ledger and RPM windows; None: the same Redis as the cache.
    state_redis_url: str | None = None
    cache_ttl: int = 86400
    # Seconds a GET /v1/models answer is kept per cache scope (the list changes rarely but does
    # change: short); 0 passes it through uncached.
    models_ttl: int = 60
    cache_max_entry_bytes: int = 32 * 1024 * 1024
    memory_cache_bytes: int = 256 * 1024 * 1024
    hot_cache_bytes: int = 256 * 1024 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    upstream_timeout: float = 300.0
    store_timeout: float = 0.25
    admin_token: Secret | None = None
    config: str | None = None
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    cache_scope: CacheScope = "key"
    key_verify_ttl: int = 3600
    finish_on_disconnect: bool = True
    shutdown_grace: float = 30.0
    redis_prefix: str = "lcp"
    workers: int = 1
    auth: Literal["auto", "passthrough", "managed"] = "auto"
    budget_fail_closed: bool = True
    charge_cache_hits: bool = False
    lock_ttl: float = 30.0
    allow_unpriced_models: bool = False
    upstream_prices: bool = True
    prices_refresh: float = 3600.0
    # Dangerous: enforce budgets even on a state Redis that may evict them (README "State Redis").
    allow_evicting_state_store: bool = False
    header_timeout: float = 10.0
    metrics_token: Secret | None = None
    # Tables from the TOML file (PROXY_CONFIG); kept raw here, parsed by their owners.
    pricing: Mapping[str, Any] = field(default_factory=dict)
    keys: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``PROXY_*`` variables, then the TOML file, then explicit overrides."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in {"pricing", "keys"}:
                continue
            raw = env.get(f"PROXY_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.config:
            settings = settings.with_toml(Path(settings.config))
        settings.validate()
        return settings

    def with_toml(self, path: Path) -> Settings:
        """Merge the TOML file: top-level scalars as defaults, ``[pricing]`` and ``[[keys]]`` tables."""
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        changes: dict[str, Any] = {}
        for key, raw in data.items():
            if key == "pricing":
                changes["pricing"] = dict(raw)
            elif key == "keys":
                changes["keys"] = tuple(dict(k) for k in raw)
            elif key in {f.name for f in fields(self)}:
                changes[key] = _coerce(key, str(raw)) if not isinstance(raw, bool) else raw
            else:
                raise ValueError(f"{path}: unknown setting {key!r}")
        return replace(self, **changes)

    def validate(self) -> None:
        """Refuse settings that would make the proxy misbehave later rather than at start."""
        if self.cache_scope not in ("key", "shared"):
            raise ValueError("PROXY_CACHE_SCOPE must be 'key' or 'shared'")
        if self.auth not in ("auto", "passthrough", "managed"):
            raise ValueError("PROXY_AUTH must be auto, passthrough or managed")
        if self.log_format not in ("text", "json"):
            raise ValueError("PROXY_LOG_FORMAT must be text or json")
        for name in ("cache_ttl", "max_body_bytes", "cache_max_entry_bytes", "workers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PROXY_{name.upper()} must be positive")
        if self.models_ttl < 0:
            raise ValueError("PROXY_MODELS_TTL must be 0 (off) or positive")
        if self.store_timeout <= 0 or self.upstream_timeout <= 0 or self.header_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.prices_refresh <= 0:
            raise ValueError("PROXY_PRICES_REFRESH must be positive")
        for name in ("admin_token", "metrics_token"):
            token = getattr(self, name)
            if token is not None and len(token.value) < MIN_TOKEN_CHARS:
                raise ValueError(
                    f"PROXY_{name.upper()} must be at least {MIN_TOKEN_CHARS} characters "
                    f"(it has {len(token.value)}): a short bearer token can be guessed; "
                    "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        for name, url in (
            ("PROXY_REDIS_URL", self.redis_url),
            ("PROXY_STATE_REDIS_URL", self.state_redis_url),
        ):
            scheme, sep, _ = (url or "redis://").partition("://")
            if not sep or scheme not in _REDIS_SCHEMES:
                raise ValueError(
                    f"{name} must be redis://, rediss://, or a cluster seed redis+cluster://host:port"
                )

    @property
    def state_url(self) -> str | None:
        """Where keys and budgets live: ``PROXY_STATE_REDIS_URL``, else the cache's Redis, else memory."""
        return self.state_redis_url or self.redis_url

    @property
    def redis_op_timeout(self) -> float:
        """Bound of a Redis script or lookup on the request path (lock, announce, key, budget):
        a few round trips of the store timeout, never less than a second."""
        return max(self.store_timeout * 4, 1.0)

    @property
    def upstream_base(self) -> str:
        """Upstream base URL without a trailing slash (``.../v1``)."""
        return self.upstream_url.rstrip("/")


_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")

_INT = {
    "port",
    "cache_ttl",
    "models_ttl",
    "cache_max_entry_bytes",
    "memory_cache_bytes",
    "hot_cache_bytes",
    "max_body_bytes",
    "key_verify_ttl",
    "workers",
}
_FLOAT = {
    "upstream_timeout",
    "store_timeout",
    "shutdown_grace",
    "lock_ttl",
    "prices_refresh",
    "header_timeout",
}
_BOOL = {
    "finish_on_disconnect",
    "budget_fail_closed",
    "charge_cache_hits",
    "allow_unpriced_models",
    "upstream_prices",
    "allow_evicting_state_store",
}
_SECRET = {"upstream_api_key", "admin_token", "metrics_token"}


def _coerce(name: str, raw: str) -> Any:
    try:
        if name in _INT:
            return int(raw)
        if name in _FLOAT:
            return float(raw)
        if name in _BOOL:
            return _bool(raw)
    except ValueError as exc:
        raise ValueError(f"PROXY_{name.upper()}: {exc}") from None
    if name in _SECRET:
        return Secret(raw)
    return raw
