"""Pricing: exact micro-USD arithmetic, model lookup rules, precedence and TOML parsing."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.obs.pricing import (
    DEFAULT_PRICES,
    ModelPrice,
    PriceTable,
    micro_to_usd,
    parse_pricing,
)

IMAGE_MODEL = "gemini-2.5-flash-image-preview"
TABLE = PriceTable()
tokens = st.integers(min_value=0, max_value=10_000_000)
models = st.sampled_from(sorted(DEFAULT_PRICES))


def test_image_model_costs_exactly_38700_micro_usd_per_image() -> None:
    """1,290 output tokens at $30/M is exactly 38,700 micro-USD (~$0.039), no float drift."""
    assert TABLE.cost_micro_usd(IMAGE_MODEL, 0, 1290) == 38_700
    assert TABLE.cost_micro_usd(IMAGE_MODEL, 10, 1290) == 38_703


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


def test_unknown_model_has_no_cost() -> None:
    """An unknown model has no price and no cost (None), never a guessed one."""
    assert TABLE.lookup("totally-new-model") is None
    assert TABLE.cost_micro_usd("totally-new-model", 10, 10) is None


def test_per_request_and_per_input_image_fees_are_added() -> None:
    """A per-call fee is charged once per call, a per-input-image fee per image in the request."""
    table = PriceTable(
        {
            "m": ModelPrice(
                Fraction(1),
                Fraction(2),
                per_input_image_usd=Fraction("0.001"),
                per_request_usd=Fraction("0.01"),
            )
        }
    )
    assert table.cost_micro_usd("m", 10, 5) == 10 + 10 + 10_000
    assert table.cost_micro_usd("m", 10, 5, input_images=3) == 10 + 10 + 10_000 + 3_000


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
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("vertex_ai/claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("o3-pro-2025-06-10", "o3-pro"),
        ("gpt-5-2025-08-07", "gpt-5"),
    ],
)
def test_lookup_resolves_prefixes_and_snapshots(model: str, expected: str) -> None:
    """Exact name, then without provider/, then without a dated or versioned snapshot suffix."""
    assert TABLE.lookup(model) is DEFAULT_PRICES[expected]


# Real models that are NOT their prefix: pricing them as it would charge a fraction of their cost.
DANGEROUS_NAMES = [
    "gpt-5-pro",  # 12x gpt-5
    "o1-pro",  # 10x o1
    "gpt-4o-audio-preview",
    "gpt-4o-realtime-preview-2024-12-17",
    "gpt-4o-mini-tts",
    "gpt-4o-mini-search-preview",
    "gpt-4o-search-preview",
    "o3-deep-research",
    "o4-mini-deep-research",
    "gpt-5-chat-latest",
    "gpt-4.1-mini-2025-04-14-ft",
    "gemini-2.5-pro-preview-tts",
    "gemini-2.5-flash-image-preview-hd",
    "claude-opus-4-1-fast",
    "openai/gpt-4o-transcribe",
]


@pytest.mark.parametrize("model", DANGEROUS_NAMES)
def test_more_expensive_variants_are_never_priced_as_their_prefix(model: str) -> None:
    """A variant that merely starts with a known name is unpriced, not priced as the cheaper model."""
    assert TABLE.lookup(model) is None


@given(model=models, suffix=st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True))
def test_no_word_suffix_borrows_a_price(model: str, suffix: str) -> None:
    """`<known>-<word>` is priced only if it is itself a known model (or `-latest`), never by prefix."""
    name = f"{model}-{suffix}"
    price = TABLE.lookup(name)
    assert price is None or name in DEFAULT_PRICES or suffix == "latest"


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
    """The image model: $0.30/M in, $30/M out, one image plus a caption as the smallest grant."""
    price = DEFAULT_PRICES[IMAGE_MODEL]
    assert (price.input_per_million_usd, price.output_per_million_usd) == (Fraction("0.3"), 30)
    assert price.typical_completion_tokens == 1290 + 256
    assert price.max_output_tokens == 32_768
    assert price.max_tokens_param == "max_tokens"


def test_reasoning_models_are_bounded_with_max_completion_tokens() -> None:
    """OpenAI's o-series and gpt-5 refuse max_tokens; their bound goes in max_completion_tokens."""
    for model in ("o1", "o3", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini"):
        assert DEFAULT_PRICES[model].max_tokens_param == "max_completion_tokens", model
    assert DEFAULT_PRICES["gpt-4o"].max_tokens_param == "max_tokens"


def test_parse_overrides_full_and_partial() -> None:
    """Full tables build prices; a known model may override only some keys, keeping the rest."""
    config = parse_pricing(
        {
            "my-model": {
                "input_per_million": 1,
                "output_per_million": 2.5,
                "per_image": 0.02,
                "typical_completion_tokens": 300,
                "max_output_tokens": 8000,
                "max_tokens_param": "max_completion_tokens",
                "input_tokens_per_image": 700,
            },
            "gpt-4o": {"input_per_million": 2},
        }
    )
    table = PriceTable.from_config(config)
    assert table.lookup("my-model") == ModelPrice(
        Fraction(1),
        Fraction("2.5"),
        Fraction("0.02"),
        typical_completion_tokens=300,
        max_output_tokens=8000,
        max_tokens_param="max_completion_tokens",
        input_tokens_per_image=700,
    )
    gpt4o = table.lookup("gpt-4o")
    assert gpt4o is not None
    assert (gpt4o.input_per_million_usd, gpt4o.output_per_million_usd) == (2, 10)
    assert gpt4o.max_output_tokens == DEFAULT_PRICES["gpt-4o"].max_output_tokens
    assert table.cost_micro_usd("my-model", 1, 2, images=1) == 1 + 5 + 20_000


def test_precedence_toml_then_upstream_then_builtin_then_default() -> None:
    """TOML beats the upstream list, which beats built-ins, which beat `*`; else unpriced."""
    config = parse_pricing(
        {
            "gpt-4o": {"input_per_million": 7, "output_per_million": 7},
            "*": {"input_per_million": 5, "output_per_million": 50},
        }
    )
    upstream = {
        "gpt-4o": ModelPrice(Fraction(3), Fraction(3)),
        "gpt-4o-mini": ModelPrice(Fraction(4), Fraction(4)),
    }
    table = PriceTable.from_config(config).with_upstream(upstream)

    def prices(model: str) -> tuple[Fraction, Fraction] | None:
        found = table.lookup(model)
        return None if found is None else (found.input_per_million_usd, found.output_per_million_usd)

    assert prices("gpt-4o") == (7, 7)  # TOML
    assert prices("openai/gpt-4o-2024-08-06") == (7, 7)  # TOML, through prefix and snapshot
    assert prices("gpt-4o-mini") == (4, 4)  # upstream
    assert prices("gpt-4.1") == (2, 8)  # built-in
    assert prices("some-new-model") == (5, 50)  # "*"
    assert PriceTable().lookup("some-new-model") is None


def test_partial_toml_override_applies_over_the_upstream_price() -> None:
    """A TOML table naming only limits keeps the price from the upstream list."""
    config = parse_pricing({"gpt-4o": {"max_output_tokens": 2048}})
    table = PriceTable.from_config(config).with_upstream({"gpt-4o": ModelPrice(Fraction(3), Fraction(9))})
    price = table.lookup("gpt-4o")
    assert price is not None
    assert (price.input_per_million_usd, price.output_per_million_usd) == (3, 9)
    assert price.max_output_tokens == 2048


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
        ({"*": {"input_per_million": 1}}, "default price needs output_per_million"),
        ({"gpt-4o": {"max_output_tokens": 0}}, "at least 1"),
        ({"gpt-4o": {"max_tokens_param": "max_length"}}, "max_tokens_param"),
        ({"gpt-4o": {"input_tokens_per_image": -3}}, "input_tokens_per_image"),
    ],
)
def test_parse_overrides_rejects_bad_values(table: dict[str, object], message: str) -> None:
    """Bad types, negatives, non-finite numbers, typos and missing keys raise a clear ValueError."""
    with pytest.raises(ValueError, match=message):
        parse_pricing(table)


def test_model_price_validates_directly() -> None:
    """ModelPrice itself refuses negative prices."""
    with pytest.raises(ValueError, match="input_per_million_usd"):
        ModelPrice(-1.0, 0.0)


def test_micro_to_usd() -> None:
    """Micro-USD converts to USD by dividing by one million."""
    assert micro_to_usd(38_700) == pytest.approx(0.0387)
    assert micro_to_usd(0) == 0.0
