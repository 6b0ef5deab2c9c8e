"""Helpers for the console tests: a logged-in browser-like HTTP client (cookies, CSRF, Origin)."""

from __future__ import annotations

import re
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from tests.managed_helpers import ADMIN_TOKEN
from tests.proxy_harness import ProxyServer

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


class ConsoleClient:
    """What the console's page does over HTTP: log in with the form, then call ``/ui/api`` with the
    session cookie, the CSRF token and a same-origin ``Origin`` header."""

    def __init__(self, proxy: ProxyServer) -> None:
        self.proxy = proxy
        # unsafe=True: aiohttp's jar otherwise drops cookies of an IP-address host (127.0.0.1).
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    @property
    def origin(self) -> str:
        return self.proxy.base

    async def __aenter__(self) -> ConsoleClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.session.close()

    async def login(self, token: str = ADMIN_TOKEN) -> aiohttp.ClientResponse:
        """Post the login form; on success read the CSRF token from the console page."""
        async with self.session.post(
            f"{self.proxy.base}/ui/login",
            data={"token": token},
            headers={"Origin": self.origin},
            allow_redirects=False,
        ) as response:
            await response.read()
        if response.status == 303:
            async with self.session.get(f"{self.proxy.base}/ui") as page:
                found = CSRF_META.search(await page.text())
            assert found, "the console page carries no CSRF token"
            self.csrf = found.group(1)
        return response

    async def call(
        self, method: str, path: str, body: Any = None, *, csrf: bool = True, origin: str | None = "own"
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """One ``/ui`` call; returns (status, JSON or bytes, response)."""
        headers = {}
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        if origin is not None:
            headers["Origin"] = self.origin if origin == "own" else origin
        async with self.session.request(
            method, f"{self.proxy.base}{path}", json=body, headers=headers, allow_redirects=False
        ) as response:
            raw = await response.read()
        if response.content_type == "application/json":
            return response.status, orjson.loads(raw), response
        return response.status, raw, response
