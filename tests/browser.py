"""A real headless browser for the console tests: Debian's chromium driven by playwright.

``playwright install`` downloads browsers and cannot here; the tests use the system's chromium
(``make chromium-bin`` installs it) or the binary ``PROXY_TEST_CHROMIUM`` names. A missing or
broken browser FAILS the test with the command that fixes it, never a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import Browser, Error, async_playwright

INSTALL = "sudo apt-get install -y --no-install-recommends chromium   (or: make chromium-bin)"


def chromium_path() -> str:
    """The browser binary, or a failed test saying how to get one."""
    named = os.environ.get("PROXY_TEST_CHROMIUM")
    path = named or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            f"the console's browser tests need chromium: "
            f"{'PROXY_TEST_CHROMIUM=' + named + ' is not executable' if named else 'none on PATH'}. "
            f"Install it: {INSTALL}",
            pytrace=False,
        )
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless chromium (no sandbox: tests may run as root in a container)."""
    path = chromium_path()
    async with async_playwright() as playwright:
        try:
            browser = await playwright.chromium.launch(
                executable_path=path, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
        except Error as exc:
            pytest.fail(f"chromium at {path} did not start: {exc}. Reinstall it: {INSTALL}", pytrace=False)
        try:
            yield browser
        finally:
            await browser.close()
