"""Managed keys on the Responses API: admitted, reserved with ``max_output_tokens`` as the bound
sent upstream, settled to the real cost, refused with 429 ``insufficient_quota`` when spent; hits
free; never-cached requests still metered."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from proxy.budget.plan import plan_reservation
from proxy.endpoints.responses import Responses
from proxy.obs.model_price import ModelPrice
from proxy.obs.pricing import PriceTable, parse_pricing
from tests.e2e_helpers import async_client
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import UPSTREAM_KEY, create_key, key_status, managed_proxy
from tests.responses_helpers import IMAGE_TOOL, MODEL, respond_raw

# Round prices: 100 micro-USD per token in and out; a reservation grants 100 to 1,000 tokens.
PRICING: dict[str, Any] = {
    MODEL: {
        "input_per_million": 100,
        "output_per_million": 100,
        "typical_completion_tokens": 100,
        "max_output_tokens": 1000,
    }
}


def price(model: str = MODEL) -> ModelPrice:
    """The test's price of ``model`` (``MODEL`` as ``PRICING`` says, others built in)."""
    found = PriceTable.from_config(parse_pricing(PRICING)).lookup(model)
    assert found is not None
    return found


def least_reservation(body: dict[str, Any]) -> int:
    """The smallest reservation of ``body`` (its prompt bound and the typical completion)."""
    endpoint = Responses()
    demand = endpoint.demand(endpoint.parse(orjson.dumps(body), "application/json"))
    image_price = price(demand.image_model) if demand.image_model else None
    plan = plan_reservation(price(), demand, budgeted=True, image_price=image_price)
    assert plan.grant is not None
    assert plan.bound_fields == ("max_output_tokens",)
    return plan.fixed_micro + plan.grant.cost(plan.grant.floor)


def cost(usage: dict[str, Any]) -> int:
    """What an answer's usage costs at 100 micro-USD per token."""
    return 100 * (usage["input_tokens"] + usage["output_tokens"])


async def test_responses_are_bounded_settled_and_refused_once_spent(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A budget just over one reservation: the first request goes upstream with the grant as
    ``max_output_tokens`` and the proxy's key, is charged its real cost; the next new one is 429
    insufficient_quota (the SDK raises RateLimitError), never forwarded; the first again is a free HIT."""
    first_body = {"model": MODEL, "input": "first"}
    async with managed_proxy(fake_upstream, redis_url, key_prefix, pricing=PRICING) as proxy:
        key, secret = await create_key(
            proxy, budget_usd=(least_reservation(first_body) + 300) / 1e6, period="month"
        )
        first = await respond_raw(proxy, first_body, api_key=secret)
        spent = await key_status(proxy, key["id"])
        async with async_client(proxy, secret) as client:
            with pytest.raises(openai.RateLimitError, match="Budget exceeded") as refused:
                await client.responses.create(model=MODEL, input="second")
        hit = await respond_raw(proxy, first_body, api_key=secret)
        after = await key_status(proxy, key["id"])
    assert first.status == 200, first.body
    assert spent["spend_micro_usd"] == cost(first.json()["usage"])
    assert spent["reserved_usd"] == 0
    assert refused.value.status_code == 429
    assert refused.value.code == "budget_exceeded"
    assert hit.headers["X-Cache"] == "HIT"
    assert after["spend_micro_usd"] == spent["spend_micro_usd"]
    (sent,) = fake_upstream.state.requests["responses"]
    assert sent["input"] == "first"
    assert 100 <= sent["max_output_tokens"] <= 1000
    assert fake_upstream.state.auth_headers[-1] == f"Bearer {UPSTREAM_KEY}"


async def test_a_client_limit_above_the_models_maximum_is_lowered_to_it(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """``max_output_tokens`` 5,000 against a maximum of 1,000: sent upstream as 1,000 (the
    reservation covers no more); 500 is sent as the client set it."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix, pricing=PRICING) as proxy:
        _, secret = await create_key(proxy, budget_usd=10, period="day")
        for limit in (5000, 500):
            reply = await respond_raw(
                proxy, {"model": MODEL, "input": f"limit {limit}", "max_output_tokens": limit}, api_key=secret
            )
            assert reply.status == 200, reply.body
    assert [r["max_output_tokens"] for r in fake_upstream.state.requests["responses"]] == [1000, 500]


async def test_a_background_request_is_forwarded_uncached_and_charged(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """``background: true`` from a managed key: BYPASS each time, both reach the upstream; the
    queued answer reports no usage, so each keeps its reservation as spend (it may be billed)."""
    body = {"model": MODEL, "input": "later", "background": True}
    async with managed_proxy(fake_upstream, redis_url, key_prefix, pricing=PRICING) as proxy:
        key, secret = await create_key(proxy, budget_usd=10, period="day")
        replies = [await respond_raw(proxy, body, api_key=secret) for _ in range(2)]
        status = await key_status(proxy, key["id"])
    assert [r.headers["X-Cache"] for r in replies] == ["BYPASS", "BYPASS"]
    assert [r.json()["status"] for r in replies] == ["queued", "queued"]
    assert fake_upstream.state.calls["responses"] == 2
    assert status["spend_micro_usd"] >= 2 * least_reservation(body)
    assert status["reserved_usd"] == 0


async def test_the_image_tool_reserves_an_image_at_its_models_price(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A budget that covers a text request but not one gpt-image-1 image (per_image $0.04224):
    the request with the image tool is 429 before the upstream, the same request without it runs."""
    text = {"model": MODEL, "input": "draw?"}
    drawing = {**text, "tools": [IMAGE_TOOL]}
    assert least_reservation(drawing) - least_reservation(text) > 42_240
    async with managed_proxy(fake_upstream, redis_url, key_prefix, pricing=PRICING) as proxy:
        _, secret = await create_key(proxy, budget_usd=(least_reservation(text) + 10_000) / 1e6, period="day")
        refused = await respond_raw(proxy, drawing, api_key=secret)
        answered = await respond_raw(proxy, text, api_key=secret)
    assert refused.status == 429
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert answered.status == 200, answered.body
    assert [sent.get("tools") for sent in fake_upstream.state.requests["responses"]] == [None]
