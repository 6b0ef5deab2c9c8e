"""Prices of image answers: GPT image models' token usage (text and image input priced apart), the
per-image price when no usage is reported, and what a managed image request reserves."""

from __future__ import annotations

from fractions import Fraction

import pytest
from prometheus_client import CollectorRegistry

from proxy.budget.plan import plan_reservation
from proxy.endpoints.images import image_demand, image_usage
from proxy.obs.accounting import Accountant
from proxy.obs.metrics import ProxyMetrics
from proxy.obs.model_price import ModelPrice
from proxy.obs.pricing import PriceTable, parse_pricing
from proxy.obs.usage import Demand, Usage

TABLE = PriceTable()
# gpt-image-1 as OpenAI reports a 1024x1024 medium edit of one upload (input 765 image + 10 text).
EDIT_USAGE = {
    "input_tokens": 775,
    "input_tokens_details": {"image_tokens": 765, "text_tokens": 10},
    "output_tokens": 1056,
    "output_tokens_details": {"image_tokens": 1056, "text_tokens": 0},
    "total_tokens": 1831,
}
ONE_IMAGE = {"created": 1, "data": [{"b64_json": "AAAA"}]}


def cost(model: str, usage: Usage) -> int:
    """What the accountant charges for ``usage`` (the path a miss and a hit take)."""
    return Accountant(TABLE, ProxyMetrics(CollectorRegistry())).cost(model, usage)


def test_gpt_image_usage_prices_text_image_input_and_output_tokens_apart() -> None:
    """10 text tokens at $5/M, 765 image tokens at $10/M, 1,056 output at $40/M: 50 + 7,650 +
    42,240 micro-USD; the per-image price is not added (the tokens bill the image)."""
    usage = image_usage(EDIT_USAGE, ONE_IMAGE, input_images=1)
    assert (usage.prompt_tokens, usage.image_prompt_tokens, usage.completion_tokens) == (775, 765, 1056)
    assert usage.images == 1
    assert usage.images_in_tokens
    assert cost("gpt-image-1", usage) == 50 + 7_650 + 42_240


def test_an_answer_without_usage_costs_the_per_image_price() -> None:
    """No usage (LLMGateway's images route): each image costs the model's per-image price, and the
    answer is priced at all (``from_answer``), 2 x $0.0387 for Gemini, 2 x $0.04224 for gpt-image-1."""
    two = {"created": 1, "data": [{"b64_json": "AAAA"}, {"b64_json": "BBBB"}]}
    usage = image_usage(None, two, input_images=0)
    assert usage == Usage(images=2, from_answer=True)
    assert cost("gemini-2.5-flash-image-preview", usage) == 77_400
    assert cost("gpt-image-1", usage) == 84_480


def test_no_answer_is_not_priced_from_the_answer() -> None:
    """A cut stream has no document: nothing to count, so the reservation stands (``from_answer``)."""
    assert not image_usage(None, None, input_images=0).from_answer


def test_chat_image_tokens_keep_their_price_with_a_per_image_price_set() -> None:
    """Gemini's chat answer bills its image as 1,290 output tokens: exactly $0.0387, the new
    per-image price is not added on top."""
    usage = Usage.from_mapping({"prompt_tokens": 0, "completion_tokens": 1290}, images=1)
    assert cost("gemini-2.5-flash-image-preview", usage) == 38_700


def test_input_and_output_token_names_of_the_images_api_are_read() -> None:
    """``input_tokens``/``output_tokens`` (Images and Responses APIs) count as prompt/completion."""
    assert Usage.from_mapping(EDIT_USAGE) == Usage(775, 1056)
    assert Usage.from_mapping({"prompt_tokens": 3, "input_tokens": 9}) == Usage(3, 0)


def test_image_input_price_is_parsed_from_toml_and_defaults_to_the_text_price() -> None:
    """``input_image_per_million`` in ``[pricing]`` prices image prompt tokens; absent, they cost
    as text."""
    config = parse_pricing(
        {"img": {"input_per_million": 1, "output_per_million": 2, "input_image_per_million": 7}}
    )
    table = PriceTable.from_config(config)
    assert table.cost_micro_usd("img", 10, 0, image_prompt_tokens=4) == 6 * 1 + 4 * 7
    plain = PriceTable({"m": ModelPrice(1, 2)})
    assert plain.cost_micro_usd("m", 10, 0, image_prompt_tokens=4) == 10


def test_image_prompt_tokens_never_exceed_the_prompt() -> None:
    """A buggy upstream reporting more image tokens than input tokens is charged for its input
    tokens, all at the image price, never a negative text part."""
    assert TABLE.cost_micro_usd("gpt-image-1", 10, 0, image_prompt_tokens=50) == 10 * 10


@pytest.mark.parametrize("value", [-1, "x", True])
def test_bad_image_input_price_is_refused(value: object) -> None:
    """A negative or non-numeric ``input_image_per_million`` is a config error naming the key."""
    with pytest.raises(ValueError, match="input_image_per_million"):
        parse_pricing({"gpt-image-1": {"input_image_per_million": value}})


def test_a_managed_image_request_reserves_its_largest_images_and_their_per_image_price() -> None:
    """n=3 with gpt-image-1: the prompt, then per image the largest image in tokens (6,240 at $40/M)
    granted and the per-image price reserved; no bound goes upstream (the API takes none)."""
    price = TABLE.lookup("gpt-image-1")
    assert price is not None
    demand = image_demand("a cat", 3)
    assert demand == Demand(prompt_tokens=2, choices=3, boundable=False, images=3)
    plan = plan_reservation(price, demand, budgeted=True)
    assert plan.fixed_micro == 2 * 5 + 3 * 42_240
    assert plan.grant is not None
    assert plan.grant.floor == plan.grant.cap == 6240
    assert Fraction(plan.grant.unit_num, plan.grant.unit_den) == 3 * 40
    assert plan.bound_fields == ()


def test_an_upload_reserves_the_image_input_price() -> None:
    """An edit's upload is reserved as gpt-image-1's largest input image at the image input price."""
    price = TABLE.lookup("gpt-image-1")
    assert price is not None
    with_upload = plan_reservation(price, image_demand("a cat", 1, input_images=1), budgeted=True)
    without = plan_reservation(price, image_demand("a cat", 1), budgeted=True)
    assert with_upload.fixed_micro - without.fixed_micro == 6240 * 10
