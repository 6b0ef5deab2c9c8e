"""Who is calling: a managed (proxy-issued) key, or a pass-through bearer forwarded upstream.

Managed mode is on when ``PROXY_AUTH=managed``, or (``auto``) once any managed key exists; from
then on an unknown bearer is refused with 401 rather than forwarded, so a tenant cannot bypass
its budget by presenting some other key. A bearer with our own ``sk-lcp-`` prefix is always
looked up and never forwarded upstream. Every lookup goes to the key store (no positive cache),
so a revoked key is refused by every replica on its very next request.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping

from proxy.config import Secret, Settings
from proxy.errors import ProxyError
from proxy.keys.settings import hash_secret
from proxy.keys.store import SECRET_PREFIX, KeyStore, ManagedKey, StaticKey
from proxy.storage.base import StoreUnavailable, guarded

log = logging.getLogger(__name__)

# How long "no managed key exists" is believed before asking the store again (auto mode).
_NEGATIVE_MEMO_S = 1.0


def invalid_key() -> ProxyError:
    """401 ``invalid_api_key``: unknown, disabled or revoked key (the SDK raises AuthenticationError)."""
    return ProxyError(
        401,
        "Incorrect API key provided. Use a key issued by this proxy.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


def model_not_allowed(key: ManagedKey, model: str) -> ProxyError:
    """403: the key's allow-list does not cover the model."""
    return ProxyError(
        403,
        f"The key '{key.alias}' is not allowed to use the model '{model}'.",
        type="invalid_request_error",
        code="model_not_allowed",
        param="model",
    )


def store_unavailable(what: str) -> ProxyError:
    """503: the key or budget store cannot be reached and the proxy will not guess."""
    return ProxyError(
        503,
        f"The proxy cannot reach its {what} store right now; try again shortly.",
        type="server_error",
        code="budget_store_unavailable",
    )


def bearer_of(headers: Mapping[str, str]) -> str | None:
    """The caller's bearer token, if any."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def bearer_matches(headers: Mapping[str, str], secret: Secret) -> bool:
    """Whether the caller presented ``secret`` as its bearer token (constant-time comparison)."""
    return secret_matches(bearer_of(headers) or "", secret)


def secret_matches(presented: str, secret: Secret) -> bool:
    """Whether ``presented`` is ``secret``, compared in constant time (the admin token, as a bearer
    or typed into the console's login form)."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), secret.value.encode())


def key_alias(bearer: str | None, secret: str | None = None) -> str | None:
    """A label for a pass-through caller: a short hash, never the secret (``secret``: its
    ``hash_secret`` if the caller has it already)."""
    if bearer is None:
        return None
    return "pt-" + (hash_secret(bearer) if secret is None else secret)[:10]


class KeyAuthenticator:
    """Resolves bearers to managed keys against the shared key store, bounded in time."""

    def __init__(
        self,
        store: KeyStore,
        settings: Settings,
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.timeout = timeout
        self._clock = clock
        self._static = tuple(StaticKey.from_mapping(entry) for entry in settings.keys)
        self._static_loaded = not self._static
        self._managed_seen = settings.auth == "managed" or bool(self._static)
        self._negative_until = 0.0

    async def load_static(self) -> bool:
        """Upsert the TOML keys; False (and retried on the next request) while the store is down."""
        if self._static_loaded:
            return True
        try:
            async with guarded("load keys", self.timeout):
                await self.store.load_static(self._static)
        except StoreUnavailable as exc:
            log.warning("could not load configured keys yet: %s", type(exc.__cause__).__name__)
            return False
        self._static_loaded = True
        return True

    def key_created(self) -> None:
        """This replica issued a key: managed mode is on from this request on, not after the memo."""
        if self.settings.auth != "passthrough":
            self._managed_seen = True

    async def managed_mode(self) -> bool:
        """True when unknown bearers must be refused (config says so, or a managed key exists)."""
        if self.settings.auth == "passthrough":
            return False
        if self._managed_seen:
            return True
        if self._clock() < self._negative_until:
            return False
        try:
            async with guarded("any keys", self.timeout):
                self._managed_seen = await self.store.any_keys()
        except StoreUnavailable:
            # Pass-through stays available while the store is down, without paying the timeout
            # on every request.
            self._negative_until = self._clock() + _NEGATIVE_MEMO_S
            return False
        if not self._managed_seen:
            self._negative_until = self._clock() + _NEGATIVE_MEMO_S
        return self._managed_seen

    async def resolve(self, bearer: str | None) -> ManagedKey | None:
        """The managed key behind ``bearer``; None for a pass-through caller; 401/503 otherwise."""
        if self.settings.auth == "passthrough":
            return None
        ours = bearer is not None and bearer.startswith(SECRET_PREFIX)
        if not ours and not await self.managed_mode():
            return None
        if bearer is None:
            raise invalid_key()
        await self.load_static()
        try:
            async with guarded("key lookup", self.timeout):
                key = await self.store.find_by_secret(bearer)
        except StoreUnavailable as exc:
            log.warning("key lookup failed: %s", type(exc.__cause__).__name__)
            raise store_unavailable("key") from None
        if key is None:
            raise invalid_key()
        self._managed_seen = True
        return key

    def upstream_authorization(self) -> str | None:
        """What managed requests present upstream: the proxy's own key."""
        secret = self.settings.upstream_api_key
        return None if secret is None else f"Bearer {secret.value}"
