"""Managed keys on the Images API: admitted, reserved per image, settled to the real cost, refused
with 429 ``insufficient_quota`` when spent; hits free; two keys never share an image."""

from __future__ import annotations

import openai
import pytest

from proxy.budget.plan import plan_reservation
from proxy.endpoints.images import image_demand
from proxy.obs.pricing import DEFAULT_PRICES
from proxy.sim.png import make_png
from tests.e2e_helpers import async_client
from tests.fake_upstream import FakeUpstream
from tests.images_helpers import GPT_IMAGE, SMALL_PNG, generate_raw
from tests.managed_helpers import UPSTREAM_KEY, create_key, key_status, managed_proxy
from tests.proxy_harness import ProxyServer

# gpt-image-1, 1024x1024 medium, as the simulator bills it: 1,056 output tokens at $40/M plus a
# one-token prompt at $5/M.
ONE_IMAGE_MICRO = 1056 * 40 + 5


def reserved_micro(prompt: str, n: int = 1, uploads: int = 0) -> int:
    """What the proxy reserves for one gpt-image-1 request (the largest image, no grant range)."""
    plan = plan_reservation(DEFAULT_PRICES[GPT_IMAGE], image_demand(prompt, n, uploads), budgeted=True)
    assert plan.grant is not None
    return plan.fixed_micro + plan.grant.cost(plan.grant.cap)


@pytest.fixture(autouse=True)
def small_images(fake_upstream: FakeUpstream) -> None:
    """Small PNGs: quick to generate and store."""
    fake_upstream.state.image_bytes = SMALL_PNG


async def test_images_are_settled_to_their_cost_and_refused_once_the_budget_cannot_cover_one(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A budget that covers one image's reservation: the first image is charged its real cost, the
    next new one is 429 insufficient_quota (x-should-retry: false) and never forwarded; the
    first one again is a free HIT."""
    budget = reserved_micro("first") + ONE_IMAGE_MICRO // 2
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, budget_usd=budget / 1_000_000, period="month")
        first = await generate_raw(proxy, {"model": GPT_IMAGE, "prompt": "first"}, api_key=secret)
        spent = await key_status(proxy, key["id"])
        refused = await generate_raw(proxy, {"model": GPT_IMAGE, "prompt": "second"}, api_key=secret)
        hit = await generate_raw(proxy, {"model": GPT_IMAGE, "prompt": "first"}, api_key=secret)
        after = await key_status(proxy, key["id"])
    assert first.status == 200, first.body
    assert spent["spend_micro_usd"] == ONE_IMAGE_MICRO
    assert spent["reserved_usd"] == 0
    assert refused.status == 429
    assert refused.headers["x-should-retry"] == "false"
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
    assert hit.status == 200
    assert hit.headers["X-Cache"] == "HIT"
    assert after["spend_micro_usd"] == ONE_IMAGE_MICRO
    assert fake_upstream.state.calls["images"] == 1
    assert [r["prompt"] for r in fake_upstream.state.requests["images"]] == ["first"]
    assert fake_upstream.state.auth_headers[-1] == f"Bearer {UPSTREAM_KEY}"


async def test_n_images_reserve_n_times_and_the_sdk_raises_rate_limit_error(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """n=3 reserves three images: a budget for two refuses it before the upstream, the openai SDK
    raising RateLimitError without retrying; n=1 fits."""
    budget = 2 * reserved_micro("many")
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        _, secret = await create_key(proxy, budget_usd=budget / 1_000_000, period="day")
        async with async_client(proxy, secret) as client:
            with pytest.raises(openai.RateLimitError, match="Budget exceeded"):
                await client.images.generate(model=GPT_IMAGE, prompt="many", n=3)
            answer = await client.images.generate(model=GPT_IMAGE, prompt="many", n=1)
    assert answer.data is not None
    assert len(answer.data) == 1
    assert fake_upstream.state.calls["images"] == 1


async def test_two_managed_keys_never_share_an_image(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """The same request with two managed keys: two entries, two upstream calls; each key then hits."""
    body = {"model": GPT_IMAGE, "prompt": "private"}
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        _, one = await create_key(proxy, budget_usd=10, period="month")
        _, two = await create_key(proxy, alias="team-b", budget_usd=10, period="month")
        replies = [await generate_raw(proxy, body, api_key=secret) for secret in (one, two, one, two)]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "MISS", "HIT", "HIT"]
    assert fake_upstream.state.calls["images"] == 2


async def test_an_edit_is_reserved_and_settled_like_a_generation(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A managed edit with one upload: charged the simulator's usage exactly (765 image tokens at
    $10/M, the prompt at $5/M, 1,056 output tokens at $40/M), then refused when spent."""
    photo = ("photo.png", make_png("budget photo", 3000), "image/png")
    budget = reserved_micro("hat", uploads=1) + ONE_IMAGE_MICRO // 2
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, budget_usd=budget / 1_000_000, period="total")
        async with async_client(proxy, secret) as client:
            await client.images.edit(model=GPT_IMAGE, image=photo, prompt="hat")
            status = await key_status(proxy, key["id"])
            with pytest.raises(openai.RateLimitError):
                await client.images.edit(model=GPT_IMAGE, image=photo, prompt="scarf")
    assert status["spend_micro_usd"] == 765 * 10 + 1056 * 40 + 5
    assert fake_upstream.state.calls["images_edits"] == 1


async def test_an_unpriced_image_model_is_refused_for_a_key_with_a_budget(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A request naming no model (the upstream's ``auto``) is not priced: a key with a budget gets
    a 4xx before anything is forwarded, never a free image."""
    proxy: ProxyServer
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        _, secret = await create_key(proxy, budget_usd=10, period="month")
        reply = await generate_raw(proxy, {"prompt": "no model named"}, api_key=secret)
    assert reply.status == 403, reply.body
    assert "auto" in reply.json()["error"]["message"]
    assert fake_upstream.state.calls["images"] == 0
