"""What a managed miss reserves: client limits capped by the model, grants, n, images, CJK text."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.budget.plan import plan_reservation
from proxy.endpoints.chat import chat_demand, count_images, prompt_token_bound
from proxy.obs.pricing import DEFAULT_PRICES
from tests.e2e_helpers import IMAGE_MODEL, TEXT_MODEL, chat_body

MINI = DEFAULT_PRICES[TEXT_MODEL]  # gpt-4o-mini: 0.15 / 0.60 per million, 16,384 output tokens
O3 = DEFAULT_PRICES["o3"]


def plan(body: dict[str, Any], price: Any = MINI, *, budgeted: bool = True) -> Any:
    return plan_reservation(price, chat_demand(orjson.dumps(body), body), budgeted=budgeted)


def test_no_limit_with_a_budget_grants_typical_to_max_and_sets_the_bound() -> None:
    """No max_tokens on a budgeted key: a grant from typical to the model max, sent as max_tokens."""
    result = plan(chat_body("hello"))
    assert (result.grant.floor, result.grant.cap) == (1000, 16_384)
    assert result.bound_fields == ("max_tokens",)
    assert Fraction(result.grant.unit_num, result.grant.unit_den) == Fraction("0.6")


def test_reasoning_models_are_bounded_with_max_completion_tokens() -> None:
    """o3's bound travels in max_completion_tokens, its floor is 4,000 and its cap 100,000."""
    result = plan(chat_body("think", "o3"), O3)
    assert result.bound_fields == ("max_completion_tokens",)
    assert (result.grant.floor, result.grant.cap) == (4000, 100_000)


@pytest.mark.parametrize(
    ("extra", "units", "lowered"),
    [
        ({"max_tokens": 50}, 50, ()),
        ({"max_completion_tokens": 70}, 70, ()),
        ({"max_tokens": 10, "max_completion_tokens": 90}, 90, ()),
        ({"max_tokens": 1_000_000}, 16_384, ("max_tokens",)),  # above the model's maximum: lowered
        ({"max_tokens": 20_000, "max_completion_tokens": 9}, 16_384, ("max_tokens",)),
        ({"max_tokens": "lots"}, 16_384, ()),  # forwarded as sent: the worst case is reserved
        ({"max_tokens": 0}, 16_384, ()),
    ],
)
def test_client_limits_are_reserved_capped_by_the_model(
    extra: dict[str, Any], units: int, lowered: tuple[str, ...]
) -> None:
    """A client's own limit is a fixed grant (at most the model max), forwarded as sent unless
    it exceeds the maximum the reservation covers; keys without a budget are never changed."""
    result = plan(chat_body("hello", **extra))
    assert result.grant.floor == result.grant.cap == units
    assert result.bound_fields == lowered
    assert plan(chat_body("hello", **extra), budgeted=False).bound_fields == ()


def test_n_multiplies_the_completion_unit() -> None:
    """n=4: each granted unit is one token in each of four choices, so it costs four times as much."""
    one, four = plan(chat_body("hello")), plan(chat_body("hello", n=4))
    assert Fraction(four.grant.unit_num, four.grant.unit_den) == 4 * Fraction(
        one.grant.unit_num, one.grant.unit_den
    )
    assert four.fixed_micro == plan(chat_body("hello", n=1)).fixed_micro


def test_keys_without_a_budget_reserve_typical_and_are_not_bounded() -> None:
    """Unlimited keys: bookkeeping only; the request goes upstream exactly as sent."""
    result = plan(chat_body("hello"), budgeted=False)
    assert result.grant.floor == result.grant.cap == 1000
    assert result.bound_fields == ()


def test_unpriced_model_reserves_nothing() -> None:
    """An unpriced model (allowed explicitly) reserves 0 and is not bounded."""
    result = plan(chat_body("hello", "mystery"), None)
    assert (result.fixed_micro, result.grant, result.bound_fields) == (0, None, ())


def _edit_body(image_bytes: int, parts: int = 1) -> dict[str, Any]:
    """The seed's edit workflow: the earlier answer's image sent back, plus an instruction."""
    url = "data:image/png;base64," + "A" * image_bytes
    earlier = {"type": "image_url", "image_url": {"url": url}}
    return {
        "model": IMAGE_MODEL,
        "messages": [
            {"role": "user", "content": "a lighthouse"},
            {"role": "assistant", "content": "Here it is", "images": [earlier]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "make it night"}] + [earlier] * (parts - 1),
            },
        ],
    }


def test_images_count_per_image_not_by_their_bytes() -> None:
    """A 2 MB image costs its model's tokens per image; its base64 is not read as prompt text."""
    price = DEFAULT_PRICES[IMAGE_MODEL]
    small, big = plan(_edit_body(1000), price), plan(_edit_body(2_000_000), price)
    assert big.fixed_micro == small.fixed_micro
    per_image = price.input_tokens_per_image * price.input_per_million_usd
    three = plan(_edit_body(2_000_000, parts=3), price)
    assert three.fixed_micro - big.fixed_micro >= 2 * per_image
    assert big.fixed_micro < 1000  # about 2,322 tokens at $0.30/M, not 500,000 tokens (0.15 USD)


def test_count_images_finds_content_parts_and_answer_images() -> None:
    """Images in content parts and in an assistant's images both count; data URL bytes are summed."""
    body = _edit_body(10, parts=2)
    count, data_chars = count_images(body["messages"])
    assert count == 2
    assert data_chars == 2 * len("data:image/png;base64," + "A" * 10)
    assert count_images(
        [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x/y.png"}]}]
    ) == (
        1,
        0,
    )
    assert count_images("not a list") == (0, 0)


@given(
    text=st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=500)
)
def test_cjk_text_is_bounded_at_two_tokens_per_character_or_more(text: str) -> None:
    """Every CJK character (3 UTF-8 bytes) counts as at least 2 tokens; bytes/4 gave 0.75."""
    raw = orjson.dumps({"messages": [{"role": "user", "content": text}]})
    assert prompt_token_bound(raw, 0) >= 2 * len(text)


@given(text=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=2000))
def test_ascii_text_is_bounded_at_a_token_per_three_bytes(text: str) -> None:
    """ASCII text counts one token per three bytes (English averages about four)."""
    raw = text.encode()
    assert prompt_token_bound(raw, 0) == -(-len(raw) // 3)
