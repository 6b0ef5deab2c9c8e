"""Pricing: exact micro-USD arithmetic, model lookup rules and TOML override parsing."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.pricing import (
    DEFAULT_PRICES,
    ModelPrice,
    PriceTable,
    micro_to_usd,
    parse_price_overrides,
)

IMAGE_MODEL = "gemini-2.5-flash-image-preview"
TABLE = PriceTable()
tokens = st.integers(min_value=0, max_value=10_000_000)
models = st.sampled_from(sorted(DEFAULT_PRICES))


def test_image_model_costs_exactly_38700_micro_usd_per_image() -> None:
    """1,290 output tokens at $30/M is exactly 38,700 micro-USD (~$0.039), no float drift."""
    assert TABLE.cost_micro_usd(IMAGE_MODEL, 0, 1290) == 38_700
    assert TABLE.cost_micro_usd(IMAGE_MODEL, 10, 1290) == 38_703
    assert TABLE.estimate_micro_usd(IMAGE_MODEL, 0, None) == 38_700


@given(n=st.integers(min_value=0, max_value=1000))
def test_image_model_cost_scales_exactly_with_images(n: int) -> None:
    """n generated images cost exactly n * 38,700 micro-USD."""
    assert TABLE.cost_micro_usd(IMAGE_MODEL, 0, 1290 * n) == 38_700 * n


@given(model=models, prompt=tokens, completion=tokens, images=st.integers(0, 100))
def test_cost_is_a_non_negative_int(model: str, prompt: int, completion: int, images: int) -> None:
    """Every known model prices any usage as a non-negative integer."""
    cost = TABLE.cost_micro_usd(model, prompt, completion, images)
    assert isinstance(cost, int)
    assert cost >= 0


@given(model=models, prompt=tokens, completion=tokens, extra_p=tokens, extra_c=tokens)
def test_cost_is_monotonic_in_tokens(
    model: str, prompt: int, completion: int, extra_p: int, extra_c: int
) -> None:
    """More prompt or completion tokens never cost less."""
    base = TABLE.cost_micro_usd(model, prompt, completion)
    more = TABLE.cost_micro_usd(model, prompt + extra_p, completion + extra_c)
    assert base is not None
    assert more is not None
    assert more >= base


@given(prompt=tokens, completion=tokens)
def test_cost_matches_exact_rational_rounded_half_up(prompt: int, completion: int) -> None:
    """Cost equals the exact decimal product rounded half-up (gpt-4o-mini: 0.15 / 0.60)."""
    exact = prompt * Fraction("0.15") + completion * Fraction("0.6")
    expected = int(exact + Fraction(1, 2))
    assert TABLE.cost_micro_usd("gpt-4o-mini", prompt, completion) == expected


def test_rounding_is_half_up() -> None:
    """Half a micro-USD rounds up, less than half rounds down."""
    table = PriceTable({"m": ModelPrice(0.5, 0.25)})
    assert table.cost_micro_usd("m", 1, 0) == 1
    assert table.cost_micro_usd("m", 0, 1) == 0
    assert table.cost_micro_usd("m", 3, 0) == 2


def test_per_image_price_is_added_in_micro_usd() -> None:
    """A per-image price of $0.04 adds 40,000 micro-USD per image."""
    table = PriceTable({"img": ModelPrice(0.0, 0.0, per_image_usd=0.04)})
    assert table.cost_micro_usd("img", 0, 0, images=3) == 120_000


def test_negative_counts_never_credit_spend() -> None:
    """Negative token or image counts from a buggy upstream count as zero."""
    assert TABLE.cost_micro_usd("gpt-4o", -100, -5, images=-1) == 0


def test_unknown_model_costs_none_and_estimates_zero() -> None:
    """An unknown model has no cost (None) and reserves nothing."""
    assert TABLE.lookup("totally-new-model") is None
    assert TABLE.cost_micro_usd("totally-new-model", 10, 10) is None
    assert TABLE.estimate_micro_usd("totally-new-model", 10, 10) == 0


def test_estimate_uses_max_tokens_else_typical() -> None:
    """Reservations use max_tokens when given, else the model's typical completion size."""
    assert TABLE.estimate_micro_usd("gpt-4o", 1000, 500) == 1000 * 2.5 + 500 * 10
    assert TABLE.estimate_micro_usd("gpt-4o", 0, None) == 1000 * 10


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("google/gemini-2.5-flash-image-preview", IMAGE_MODEL),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("anthropic/claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    ],
)
def test_lookup_resolves_prefixes_and_snapshots(model: str, expected: str) -> None:
    """Exact name, then without provider/, then longest known prefix of a dated snapshot."""
    assert TABLE.lookup(model) is DEFAULT_PRICES[expected]


@pytest.mark.parametrize("model", ["gpt-4oo", "gpt", "gpt-4o/", "xgpt-4o", ""])
def test_lookup_requires_a_dash_after_the_known_prefix(model: str) -> None:
    """Names that merely start like a known model without a '-' boundary are unknown."""
    assert TABLE.lookup(model) is None


def test_exact_override_beats_prefixed_default() -> None:
    """An override for a provider-prefixed name or snapshot wins over the defaults."""
    mine = ModelPrice(1.0, 1.0)
    table = PriceTable({"openai/gpt-4o": mine, "gpt-4o-2024-05-13": mine})
    assert table.lookup("openai/gpt-4o") is mine
    assert table.lookup("gpt-4o-2024-05-13") is mine
    assert table.lookup("gpt-4o") is DEFAULT_PRICES["gpt-4o"]


def test_default_prices_are_immutable() -> None:
    """DEFAULT_PRICES cannot be modified at runtime."""
    with pytest.raises(TypeError):
        DEFAULT_PRICES["gpt-4o"] = ModelPrice(0, 0)  # type: ignore[index]


def test_image_model_default_figures() -> None:
    """The image model is listed at $0.30/M in, $30/M out, 1,290 typical tokens."""
    assert DEFAULT_PRICES[IMAGE_MODEL] == ModelPrice(0.30, 30.0, typical_completion_tokens=1290)


def test_parse_overrides_full_and_partial() -> None:
    """Full tables build prices; a known model may override only some keys."""
    parsed = parse_price_overrides(
        {
            "my-model": {
                "input_per_million": 1,
                "output_per_million": 2.5,
                "per_image": 0.02,
                "typical_completion_tokens": 300,
            },
            "gpt-4o": {"input_per_million": 2},
        }
    )
    assert parsed["my-model"] == ModelPrice(1.0, 2.5, 0.02, 300)
    assert parsed["gpt-4o"] == ModelPrice(2.0, 10.0)
    assert PriceTable(parsed).cost_micro_usd("my-model", 1, 2, images=1) == 1 + 5 + 20_000


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"m": {"input_per_million": "1", "output_per_million": 1}}, "must be a number"),
        ({"m": {"input_per_million": True, "output_per_million": 1}}, "must be a number"),
        ({"m": {"input_per_million": -1, "output_per_million": 1}}, ">= 0"),
        ({"m": {"input_per_million": float("nan"), "output_per_million": 1}}, "finite"),
        ({"m": {"input_per_million": 1, "output_per_million": float("inf")}}, "finite"),
        ({"m": {"input_per_million": 1}}, "needs output_per_million"),
        ({"gpt-4o": {"per_image": -0.5}}, "per_image"),
        ({"gpt-4o": {"typical_completion_tokens": 1.5}}, "typical_completion_tokens"),
        ({"gpt-4o": {"typical_completion_tokens": -1}}, "integer >= 0"),
        ({"gpt-4o": {"input_per_milion": 1}}, "unknown key"),
        ({"gpt-4o": 3}, "must be a table"),
        ({"": {"input_per_million": 1, "output_per_million": 1}}, "non-empty"),
    ],
)
def test_parse_overrides_rejects_bad_values(table: dict[str, object], message: str) -> None:
    """Bad types, negatives, non-finite numbers, typos and missing keys raise a clear ValueError."""
    with pytest.raises(ValueError, match=message):
        parse_price_overrides(table)


def test_model_price_validates_directly() -> None:
    """ModelPrice itself refuses negative prices."""
    with pytest.raises(ValueError, match="input_per_million_usd"):
        ModelPrice(-1.0, 0.0)


def test_micro_to_usd() -> None:
    """Micro-USD converts to USD by dividing by one million."""
    assert micro_to_usd(38_700) == pytest.approx(0.0387)
    assert micro_to_usd(0) == 0.0
