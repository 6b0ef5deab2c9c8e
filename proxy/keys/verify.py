"""Pass-through callers: never serve a cached answer to a bearer the upstream would refuse.

A bearer counts as verified once the upstream answered it with a 2xx (a real call, or a cheap
``GET /models`` made on a would-be hit). Only sha256(bearer) is remembered, with an expiry, in the
shared store so every replica benefits, plus a short in-process memo to keep hits fast.
"""

from __future__ import annotations

import logging
import time

import aiohttp

from proxy.errors import ProxyError, upstream_failure
from proxy.keys.settings import hash_secret
from proxy.storage.base import ByteStore, StoreUnavailable

log = logging.getLogger(__name__)

_MEMO_SECONDS = 30.0


class UpstreamRefusal(Exception):
    """The upstream refused the bearer; carries its answer to relay unchanged."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


class CallerVerifier:
    """Remembers verified bearers (``{prefix}:verified:{sha256}``) and verifies unknown ones."""

    def __init__(
        self, store: ByteStore, prefix: str, ttl: int, session: aiohttp.ClientSession, upstream_base: str
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.ttl = ttl
        self.session = session
        self.upstream_base = upstream_base
        self._memo: dict[str, float] = {}

    def _key(self, bearer: str, secret: str | None) -> str:
        return f"{self.prefix}:verified:{hash_secret(bearer) if secret is None else secret}"

    async def mark(self, bearer: str, secret: str | None = None) -> None:
        """The upstream just answered this bearer with a 2xx (``secret``: its ``hash_secret``, if known)."""
        key = self._key(bearer, secret)
        now = time.monotonic()
        if self._memo.get(key, 0.0) > now + min(_MEMO_SECONDS, self.ttl) / 2:
            return  # remembered recently enough: spare the miss path a store write
        self._memo[key] = now + min(_MEMO_SECONDS, self.ttl)
        try:
            await self.store.set(key, b"1", self.ttl)
        except StoreUnavailable as exc:
            log.debug("could not remember verified bearer: %s", exc)

    def known(self, bearer: str, secret: str | None = None) -> bool:
        """Whether ``bearer`` was verified lately in this process: no I/O, no coroutine (every
        cache hit of a pass-through caller asks; ``ensure`` is for the ones that are not)."""
        return self._memo.get(self._key(bearer, secret), 0.0) > time.monotonic()

    async def ensure(self, bearer: str, secret: str | None = None) -> None:
        """Return when ``bearer`` is known good; raise UpstreamRefusal / ProxyError otherwise
        (``secret``: its ``hash_secret``, if the caller has it already)."""
        key = self._key(bearer, secret)
        if self._memo.get(key, 0.0) > time.monotonic():
            return
        try:
            if await self.store.get(key) is not None:
                self._memo[key] = time.monotonic() + min(_MEMO_SECONDS, self.ttl)
                return
        except StoreUnavailable:
            pass  # fall through to asking the upstream
        await self._ask_upstream(bearer)
        await self.mark(bearer, secret)

    async def _ask_upstream(self, bearer: str) -> None:
        try:
            async with self.session.get(
                f"{self.upstream_base}/models", headers={"Authorization": f"Bearer {bearer}"}
            ) as response:
                body = await response.read()
                if 200 <= response.status < 300:
                    return
                if response.status in (401, 403):
                    raise UpstreamRefusal(response.status, body, response.content_type)
                raise ProxyError(
                    502,
                    f"Could not verify the API key with the upstream (status {response.status}).",
                    type="server_error",
                    code="key_verification_failed",
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise upstream_failure(exc) from exc
