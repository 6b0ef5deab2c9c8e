"""The operator console over HTTP: login, session, CSRF and origin checks, security headers, the
image index fed by the openai SDK (thumbnails, full images, purge → MISS), keys and the overview.

The browser itself drives the same console in tests/test_console_browser.py.
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from proxy.config import Secret
from proxy.console.thumbs import make_thumbnail
from tests.console_helpers import ConsoleClient
from tests.e2e_helpers import async_client, user
from tests.fake_upstream import FakeUpstream
from tests.images_helpers import GATEWAY_IMAGE, GPT_IMAGE, SMALL_PNG
from tests.managed_helpers import ADMIN_TOKEN, managed_proxy
from tests.proxy_harness import ProxyServer, proxy_settings

BACKENDS = ["memory", "redis"]


def _redis(backend: str, redis_url: str) -> str | None:
    return redis_url if backend == "redis" else None


async def test_console_is_absent_without_an_admin_token(fake_upstream: FakeUpstream, key_prefix: str) -> None:
    """No PROXY_ADMIN_TOKEN: every /ui/ path answers 404 (the page, the login form, the API)."""
    async with (
        ProxyServer(proxy_settings(fake_upstream.url, None, key_prefix)) as proxy,
        ConsoleClient(proxy) as console,
    ):
        statuses = [
            (await console.call("GET", "/ui"))[0],
            (await console.login()).status,
            (await console.call("GET", "/ui/api/images"))[0],
        ]
    assert statuses == [404, 404, 404]


async def test_login_page_headers_and_data_endpoints_need_a_session(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """The login page is served with a strict CSP (no inline script), nosniff, no framing and
    no-store; every data endpoint answers 401 without a session and shows no data."""
    async with managed_proxy(fake_upstream, None, key_prefix) as proxy, ConsoleClient(proxy) as console:
        status, page, response = await console.call("GET", "/ui")
        denied = [
            await console.call(method, path)
            for method, path in [
                ("GET", "/ui/api/overview"),
                ("GET", "/ui/api/images"),
                ("GET", "/ui/api/keys"),
                ("GET", "/ui/api/thumbs/" + "0" * 64 + "?size=10"),
                ("GET", "/ui/api/blobs/" + "0" * 64 + "?size=10"),
                ("POST", "/ui/api/keys"),
                ("POST", "/ui/api/images/purge"),
            ]
        ]
    assert status == 200
    assert b'name="token" type="password"' in page
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    for code, body, _ in denied:
        assert code == 401
        assert body["error"]["code"] == "console_login_required"
        assert "data" not in body


async def test_ui_with_a_trailing_slash_redirects_to_the_console(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """`/ui/` (what people type) is a 308 to `/ui`; any other empty segment is still a 400."""
    async with managed_proxy(fake_upstream, None, key_prefix) as proxy, ConsoleClient(proxy) as console:
        status, _, response = await console.call("GET", "/ui/")
        login_status, page, _ = await console.call("GET", response.headers["Location"])
        nested_status, nested, _ = await console.call("GET", "/ui//api/images")
    assert status == 308
    assert response.headers["Location"] == "/ui"
    assert login_status == 200
    assert b'name="token" type="password"' in page
    assert nested_status == 400
    assert nested["error"]["code"] == "invalid_path"


async def test_wrong_token_is_refused_and_repeated_failures_are_rate_limited(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """A wrong token gets the form again with an error, no cookie; the 11th failure within five
    minutes from one address gets 429 with Retry-After, even with the right token."""
    async with managed_proxy(fake_upstream, None, key_prefix) as proxy, ConsoleClient(proxy) as console:
        first = await console.login("wrong-token")
        statuses = [(await console.login(ADMIN_TOKEN + "x")).status for _ in range(9)]
        limited = await console.login(ADMIN_TOKEN)
        cookies = list(console.session.cookie_jar)
    assert first.status == 401
    assert statuses == [401] * 9
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert cookies == []


async def test_session_cookie_flags_and_secure_behind_tls(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """The session cookie is HttpOnly, SameSite=Strict, scoped to /ui, expires in 8 h; Secure when
    the front proxy says the browser used TLS (X-Forwarded-Proto: https), not over plain HTTP."""
    async with managed_proxy(fake_upstream, None, key_prefix) as proxy, ConsoleClient(proxy) as console:
        plain = await console.login()
        async with console.session.post(
            f"{proxy.base}/ui/login",
            data={"token": ADMIN_TOKEN},
            headers={"Origin": proxy.base.replace("http:", "https:"), "X-Forwarded-Proto": "https"},
            allow_redirects=False,
        ) as tls:
            await tls.read()
    cookie = plain.cookies["lcp_console"]
    assert plain.status == 303
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert cookie["max-age"] == str(8 * 3600)
    assert not cookie["secure"]
    assert tls.status == 303
    assert tls.cookies["lcp_console"]["secure"] is True


@pytest.mark.parametrize("backend", BACKENDS)
async def test_changes_need_csrf_and_same_origin_and_logout_ends_the_session(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, backend: str
) -> None:
    """A logged-in change without the CSRF token, with a wrong one, or from another origin is 403;
    logout (itself CSRF-checked) ends the session: the next data call is 401."""
    async with (
        managed_proxy(fake_upstream, _redis(backend, redis_url), key_prefix) as proxy,
        ConsoleClient(proxy) as console,
    ):
        assert (await console.login()).status == 303
        ok, _, _ = await console.call("GET", "/ui/api/keys")
        no_csrf = await console.call("POST", "/ui/api/keys", {"alias": "x"}, csrf=False)
        console_csrf, console.csrf = console.csrf, "forged"
        wrong_csrf = await console.call("POST", "/ui/api/keys", {"alias": "x"})
        console.csrf = console_csrf
        cross = await console.call("POST", "/ui/api/keys", {"alias": "x"}, origin="http://evil.example")
        no_origin = await console.call("POST", "/ui/api/keys", {"alias": "x"}, origin=None)
        logout_without_csrf = await console.call("POST", "/ui/logout", csrf=False)
        still_in, _, _ = await console.call("GET", "/ui/api/keys")
        logout, _, _ = await console.call("POST", "/ui/logout")
        after, _, _ = await console.call("GET", "/ui/api/keys")
        listed = await console.call("GET", "/ui/api/keys")
    assert ok == 200
    assert [r[1]["error"]["code"] for r in (no_csrf, wrong_csrf)] == ["csrf_failed", "csrf_failed"]
    assert [r[1]["error"]["code"] for r in (cross, no_origin)] == ["cross_origin", "cross_origin"]
    assert logout_without_csrf[0] == 403
    assert still_in == 200
    assert logout == 204
    assert after == 401
    assert listed[0] == 401


@pytest.mark.parametrize("backend", BACKENDS)
async def test_images_cached_through_the_sdk_are_listed_thumbnailed_and_purged(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, backend: str
) -> None:
    """A chat image answer and an images.generate answer (openai SDK) are listed newest first with
    model, prompt, size, cost and namespace; a hit counts (flushed from the process, saved = hits x
    cost); the thumbnail is a WebP ≤ 64 KB; the full image is the PNG with its type; a purge from
    the list makes the next identical request a MISS."""
    fake_upstream.state.image_bytes = SMALL_PNG
    settings = {"admin_token": Secret(ADMIN_TOKEN)}
    redis = _redis(backend, redis_url)
    async with ProxyServer(proxy_settings(fake_upstream.url, redis, key_prefix, **settings)) as proxy:
        async with async_client(proxy) as client:
            chat = await client.chat.completions.with_raw_response.create(
                model=GATEWAY_IMAGE, messages=user("a lighthouse at dusk")
            )
            await asyncio.sleep(0.01)
            generated = await client.images.with_raw_response.generate(model=GPT_IMAGE, prompt="a red fox")
            hit = await client.images.with_raw_response.generate(model=GPT_IMAGE, prompt="a red fox")
        async with ConsoleClient(proxy) as console:
            await console.login()
            status, listed, _ = await console.call("GET", "/ui/api/images")
            rows = listed["data"]
            fox = rows[0]
            _, thumb, thumb_reply = await console.call(
                "GET", f"/ui/api/thumbs/{fox['sha256']}?size={fox['blob_size']}&ttl={fox['ttl_s']}"
            )
            _, full, full_reply = await console.call(
                "GET", f"/ui/api/blobs/{fox['sha256']}?size={fox['blob_size']}"
            )
            purged = await console.call("POST", "/ui/api/images/purge", {"id": fox["id"]})
            _, after, _ = await console.call("GET", "/ui/api/images")
        async with async_client(proxy) as client:
            again = await client.images.with_raw_response.generate(model=GPT_IMAGE, prompt="a red fox")
            chat_again = await client.chat.completions.with_raw_response.create(
                model=GATEWAY_IMAGE, messages=user("a lighthouse at dusk")
            )
    assert [chat.headers["X-Cache"], generated.headers["X-Cache"], hit.headers["X-Cache"]] == ["MISS"] * 2 + [
        "HIT"
    ]
    assert status == 200
    assert [row["model"] for row in rows] == [GPT_IMAGE, GATEWAY_IMAGE]
    assert [row["prompt"] for row in rows] == ["a red fox", "a lighthouse at dusk"]
    assert fox["key"] == generated.headers["X-Cache-Key"]
    assert fox["hits"] == 1
    assert fox["cost_usd"] > 0
    assert fox["saved_usd"] == pytest.approx(fox["cost_usd"])
    assert fox["size"] > fox["blob_size"] >= SMALL_PNG * 0.9
    assert rows[1]["hits"] == 0
    assert thumb_reply.content_type == "image/webp"
    assert len(thumb) <= 64 * 1024
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.format == "WEBP"
        assert max(image.size) <= 256
    assert full_reply.content_type == "image/png"
    assert full.startswith(b"\x89PNG")
    assert len(full) == fox["blob_size"]
    assert full_reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in full_reply.headers["Content-Security-Policy"]
    assert purged[0] == 200
    assert purged[1]["deleted"] == 1
    assert [row["id"] for row in after["data"]] == [rows[1]["id"]]
    assert again.headers["X-Cache"] == "MISS"
    assert chat_again.headers["X-Cache"] == "HIT"


async def test_keys_view_creates_changes_revokes_and_shows_spend(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """The console's key routes are the admin API's: create (secret once), spend after a request,
    budget change, revoke; a bad budget gets the admin API's own 400."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy, ConsoleClient(proxy) as console:
        await console.login()
        created_status, created, _ = await console.call(
            "POST", "/ui/api/keys", {"alias": "team-a", "budget_usd": 5, "period": "day", "rpm": 60}
        )
        async with async_client(proxy, api_key=created["secret"]) as client:
            await client.chat.completions.create(model="gpt-4o-mini", messages=user("spend a little"))
        _, listed, _ = await console.call("GET", "/ui/api/keys")
        bad = await console.call("PATCH", f"/ui/api/keys/{created['id']}", {"budget_usd": "lots"})
        _, changed, _ = await console.call("PATCH", f"/ui/api/keys/{created['id']}", {"budget_usd": 2.5})
        _, revoked, _ = await console.call("POST", f"/ui/api/keys/{created['id']}/revoke")
        _, final, _ = await console.call("GET", "/ui/api/keys")
    assert created_status == 201
    assert created["secret"].startswith("sk-lcp-")
    row = listed["data"][0]
    assert "secret" not in row
    assert (row["alias"], row["budget_usd"], row["period"], row["rpm"], row["enabled"]) == (
        "team-a",
        5.0,
        "day",
        60,
        True,
    )
    assert row["spend_usd"] > 0
    assert row["remaining_usd"] == pytest.approx(5 - row["spend_usd"])
    assert row["resets_at"]
    assert bad[0] == 400
    assert bad[1]["error"]["type"] == "invalid_request_error"
    assert changed["budget_usd"] == 2.5
    assert revoked["revoked"] is True
    assert final["data"][0]["revoked"] is True


@pytest.mark.parametrize("backend", BACKENDS)
async def test_overview_counts_requests_hits_spend_and_savings(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, backend: str
) -> None:
    """Two misses and a hit (openai SDK): the last hour and day show 3 requests, hit ratio 1/3,
    spend and savings, the models on top; all from the proxy's own counters."""
    fake_upstream.state.image_bytes = SMALL_PNG
    settings = proxy_settings(
        fake_upstream.url, _redis(backend, redis_url), key_prefix, admin_token=Secret(ADMIN_TOKEN)
    )
    async with ProxyServer(settings) as proxy, ConsoleClient(proxy) as console:
        async with async_client(proxy) as client:
            await client.chat.completions.create(model="gpt-4o-mini", messages=user("hello"))
            await client.images.generate(model=GPT_IMAGE, prompt="a red fox")
            await client.images.generate(model=GPT_IMAGE, prompt="a red fox")
        await console.login()
        status, overview, _ = await console.call("GET", "/ui/api/overview")
    assert status == 200
    for window in (overview["hour"], overview["day"]):
        assert (window["requests"], window["hits"], window["misses"]) == (3, 1, 2)
        assert window["hit_ratio"] == pytest.approx(1 / 3)
        assert window["spent_usd"] > window["saved_usd"] > 0
        models = {row["name"]: row for row in window["top_models"]}
        assert models[GPT_IMAGE]["hits"] == 1
        assert models["gpt-4o-mini"]["requests"] == 1
        assert window["top_keys"][0]["requests"] == 3


async def test_bad_console_input_gets_openai_errors(fake_upstream: FakeUpstream, key_prefix: str) -> None:
    """A purge id that is not an entry id, offsets and sizes out of range, a sha256 that is not hex,
    and a login form over 4 KB are refused, naming the parameter; nothing is deleted."""
    async with managed_proxy(fake_upstream, None, key_prefix) as proxy, ConsoleClient(proxy) as console:
        await console.login()
        purges = [
            await console.call("POST", "/ui/api/images/purge", body)
            for body in ({"id": "ns:zz"}, {"id": "a:b:" + "0" * 64}, {"id": 5}, [], {})
        ]
        pages = [
            await console.call("GET", f"/ui/api/images?{query}")
            for query in ("offset=-1", "limit=0", "limit=101", "offset=1e3")
        ]
        not_hex = await console.call("GET", "/ui/api/blobs/" + "Z" * 64 + "?size=10")
        zero = await console.call("GET", "/ui/api/thumbs/" + "0" * 64 + "?size=0")
        async with console.session.post(
            f"{proxy.base}/ui/login", data={"token": "x" * 5000}, headers={"Origin": proxy.base}
        ) as big:
            await big.read()
    for status, body, _ in purges:
        assert status == 400
        assert body["error"]["param"] == "id"
    assert [(s, b["error"]["param"]) for s, b, _ in pages] == [
        (400, "offset"),
        (400, "limit"),
        (400, "limit"),
        (400, "offset"),
    ]
    assert not_hex[0] == 404
    assert not_hex[1]["error"]["code"] == "image_not_found"
    assert zero[0] == 400
    assert zero[1]["error"]["param"] == "size"
    assert big.status == 413


def test_unreadable_or_huge_images_get_no_thumbnail() -> None:
    """Bytes Pillow cannot read, and a PNG over 40 Mpx (a decompression bomb), make no thumbnail;
    a real PNG makes a WebP of at most 256 px and 64 KB."""
    huge = io.BytesIO()
    Image.new("L", (7000, 7000)).save(huge, "PNG")
    normal = io.BytesIO()
    Image.new("RGB", (1024, 768), (200, 30, 30)).save(normal, "PNG")
    thumb = make_thumbnail(normal.getvalue())
    assert make_thumbnail(b"<svg onload=alert(1)>") is None
    assert make_thumbnail(huge.getvalue()) is None
    assert thumb is not None
    assert len(thumb) <= 64 * 1024
    with Image.open(io.BytesIO(thumb)) as image:
        assert (image.format, image.size) == ("WEBP", (256, 192))


async def test_two_replicas_add_up_in_the_overview_and_the_image_list(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Two proxies on one Redis: a miss on one and the hit on the other show as 2 requests, 1 hit
    in either's overview, and the image one stored appears, with its hit, in the other's list."""
    fake_upstream.state.image_bytes = SMALL_PNG
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, admin_token=Secret(ADMIN_TOKEN))
    async with ProxyServer(settings) as first, ProxyServer(settings) as second:
        async with async_client(first) as client:
            await client.images.generate(model=GPT_IMAGE, prompt="a red fox")
        async with async_client(second) as client:
            hit = await client.images.with_raw_response.generate(model=GPT_IMAGE, prompt="a red fox")
        await asyncio.sleep(2.5)  # one flush period of the console's background task
        async with ConsoleClient(first) as console:
            await console.login()
            _, overview, _ = await console.call("GET", "/ui/api/overview")
            _, listed, _ = await console.call("GET", "/ui/api/images")
    assert hit.headers["X-Cache"] == "HIT"
    assert (overview["hour"]["requests"], overview["hour"]["hits"]) == (2, 1)
    assert [(row["model"], row["hits"]) for row in listed["data"]] == [(GPT_IMAGE, 1)]
