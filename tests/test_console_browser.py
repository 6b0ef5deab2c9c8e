"""The console in a real headless chromium (playwright): log in, thumbnails of images cached
through the openai SDK, purge one and see the next request MISS, a key's spend, create and revoke a
key, a wrong password, and a prompt full of HTML that stays text (no script runs, no dialog).

Also writes the README's screenshot of the images view: to a temporary file in every run, and to
``docs/console-images.png`` when ``PROXY_SCREENSHOT_DIR`` names the folder (``make screenshots``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Page, expect

from proxy.config import Secret
from tests.browser import chromium
from tests.e2e_helpers import async_client, user
from tests.fake_upstream import FakeUpstream
from tests.images_helpers import GATEWAY_IMAGE, GPT_IMAGE
from tests.managed_helpers import ADMIN_TOKEN, UPSTREAM_KEY
from tests.proxy_harness import ProxyServer, proxy_settings

XSS_PROMPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2; alert(1)"> a cat'


@asynccontextmanager
async def console_page(proxy: ProxyServer) -> AsyncIterator[tuple[Page, list[str]]]:
    """A fresh browser page on the console's login form; the list collects dialogs that opened."""
    dialogs: list[str] = []
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        page = await context.new_page()
        page.set_default_timeout(15_000)

        async def dismiss(dialog: object) -> None:
            dialogs.append(getattr(dialog, "message", "?"))
            await dialog.dismiss()  # type: ignore[attr-defined]

        page.on("dialog", dismiss)
        await page.goto(f"{proxy.base}/ui")
        yield page, dialogs
        await context.close()


async def until(page: Page, condition: str, timeout_s: float = 15.0) -> None:
    """Poll a JS arrow function until it returns true (``wait_for_function`` evaluates strings with
    ``new Function``, which the console's CSP rightly forbids)."""
    async with asyncio.timeout(timeout_s):
        while not await page.evaluate(condition):
            await asyncio.sleep(0.05)


async def log_in(page: Page, token: str = ADMIN_TOKEN) -> None:
    await page.fill("#token", token)
    await page.click("button[type=submit]")


async def test_wrong_password_shows_an_error_and_no_console(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """A wrong token: the form again with "Wrong admin token.", no navigation, no data; the right
    one opens the overview."""
    settings = proxy_settings(fake_upstream.url, None, key_prefix, admin_token=Secret(ADMIN_TOKEN))
    async with ProxyServer(settings) as proxy, console_page(proxy) as (page, _):
        await log_in(page, "not-the-token-" + "x" * 20)
        await expect(page.locator("#login-error")).to_have_text("Wrong admin token.")
        assert await page.locator("nav").count() == 0
        await log_in(page)
        await expect(page.locator("#overview .window")).to_have_count(2)


async def test_images_view_thumbnails_purge_and_escaped_prompts(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """Images cached through the openai SDK (chat image model, images.generate, and a prompt made of
    HTML) show as loaded thumbnails with model and prompt; the HTML prompt is text, no script ran and
    no dialog opened; a click opens the full image; Purge removes the card and the next identical
    request is a MISS."""
    fake_upstream.state.image_bytes = 512 * 1537  # the simulator's 512 x 512 noise: square thumbnails
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, admin_token=Secret(ADMIN_TOKEN))
    async with ProxyServer(settings) as proxy:
        async with async_client(proxy) as client:
            await client.chat.completions.create(model=GATEWAY_IMAGE, messages=user(XSS_PROMPT))
            await client.chat.completions.create(model=GATEWAY_IMAGE, messages=user("a lighthouse at dusk"))
            await asyncio.sleep(0.01)
            await client.images.generate(model=GPT_IMAGE, prompt="a red fox in the snow")
            await client.images.generate(model=GPT_IMAGE, prompt="a red fox in the snow")  # a hit
        async with console_page(proxy) as (page, dialogs):
            await log_in(page)
            await page.click("nav button[data-view=images]")
            cards = page.locator("#gallery .card")
            await expect(cards).to_have_count(3)
            await until(
                page,
                "() => [...document.querySelectorAll('#gallery img.thumb')]"
                ".every(i => i.complete && i.naturalWidth > 0)",
            )
            first = cards.nth(0)
            await expect(first.locator(".model")).to_have_text(GPT_IMAGE)
            await expect(first.locator(".prompt")).to_have_text("a red fox in the snow")
            await expect(first.locator(".facts").first).to_contain_text("1 hits")
            xss = cards.nth(2)
            await expect(xss.locator(".prompt")).to_have_text(XSS_PROMPT)
            assert await xss.locator(".prompt script, .prompt img").count() == 0
            assert await page.evaluate("window.__pwned") is None
            await page.screenshot(path=str(tmp_path / "console-images.png"))
            if folder := os.environ.get("PROXY_SCREENSHOT_DIR"):
                await page.screenshot(path=str(Path(folder) / "console-images.png"))
            await first.locator("img.thumb").click()
            await until(
                page,
                "() => { const i = document.querySelector('#lightbox img');"
                " return !document.getElementById('lightbox').hidden && i.complete && i.naturalWidth > 0; }",
            )
            await page.click("#lightbox")
            await first.locator("button.purge").click()
            await expect(cards).to_have_count(2)
            await expect(page.locator("#status")).to_contain_text("MISS")
            assert dialogs == []
            assert await page.evaluate("window.__pwned") is None
        async with async_client(proxy) as client:
            again = await client.images.with_raw_response.generate(
                model=GPT_IMAGE, prompt="a red fox in the snow"
            )
    assert (tmp_path / "console-images.png").read_bytes().startswith(b"\x89PNG")
    assert again.headers["X-Cache"] == "MISS"


async def test_keys_view_create_spend_budget_revoke(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Create a key in the page (its secret shown once), spend with it through the openai SDK, see
    the spend and remaining budget, change the budget, revoke it."""
    fake_upstream.state.valid_keys = {UPSTREAM_KEY}
    settings = proxy_settings(
        fake_upstream.url,
        redis_url,
        key_prefix,
        admin_token=Secret(ADMIN_TOKEN),
        upstream_api_key=Secret(UPSTREAM_KEY),
    )
    async with ProxyServer(settings) as proxy, console_page(proxy) as (page, _):
        await log_in(page)
        await page.click("nav button[data-view=keys]")
        await page.fill("#create-key input[name=alias]", "team-browser")
        await page.fill("#create-key input[name=budget_usd]", "5")
        await page.select_option("#create-key select[name=period]", "day")
        await page.fill("#create-key input[name=rpm]", "60")
        await page.click("#create-key button[type=submit]")
        secret = page.locator("#secret")
        await expect(secret).to_contain_text("sk-lcp-")
        plaintext = (await secret.text_content() or "").strip()
        async with async_client(proxy, api_key=plaintext) as client:
            await client.chat.completions.create(model="gpt-4o-mini", messages=user("spend a little"))
        await page.click("nav button[data-view=overview]")
        await page.click("nav button[data-view=keys]")
        row = page.locator("#key-table tbody tr", has_text="team-browser")
        await expect(row.locator(".spend")).not_to_have_text("$0.00")
        await expect(row.locator(".remaining")).to_contain_text("$4.99")
        await expect(row.locator(".enabled")).to_have_text("yes")
        await row.locator("input").fill("2.5")
        await row.locator("button.save-budget").click()
        await expect(page.locator("#status")).to_have_text("Budget changed.")
        await expect(row.locator("input")).to_have_value("2.5")
        await row.locator("button.revoke").click()
        await expect(row.locator(".enabled")).to_have_text("revoked")
