"""One model's price and the exact cost arithmetic in integer micro-USD (pure, no I/O).

Money is an ``int`` of micro-USD (1 USD = 1_000_000) everywhere in the proxy so that budgets,
ledgers and counters never accumulate float drift. A price of ``$X`` per million tokens is
exactly ``X`` micro-USD per token. Prices are kept as ``Fraction``s of the decimal that was
written (``0.3`` in TOML, ``"0.15e-6"`` per token from the upstream), never a binary float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

MICRO_PER_USD = 1_000_000
# The request field that bounds a completion. OpenAI's reasoning models (o1, o3, o4, gpt-5)
# refuse `max_tokens` and take `max_completion_tokens` instead (API reference, "Create chat
# completion": max_tokens "is not compatible with o-series models").
MAX_TOKENS_PARAMS = ("max_tokens", "max_completion_tokens")
# For a model the built-in table does not describe: most chat APIs accept at least 4,096 output
# tokens, and a larger bound than the model supports makes OpenAI and Anthropic reject the call.
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# Roughly what one large image costs in input tokens on Anthropic (about 1.15 megapixels / 750)
# and on OpenAI's tiled models (8 high-detail tiles of 170 + 85 = 1,445); see price_defaults.
DEFAULT_INPUT_TOKENS_PER_IMAGE = 1600
DEFAULT_TYPICAL_COMPLETION_TOKENS = 1000

_MONEY = ("input_per_million_usd", "output_per_million_usd", "per_image_usd", "per_input_image_usd")
_MONEY_PER_CALL = ("per_request_usd",)
_COUNTS = ("typical_completion_tokens", "input_tokens_per_image")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """List price of one model and the figures budget reservations are sized with.

    ``per_image_usd`` is charged per generated image (unless the usage's tokens bill it, see
    ``Usage.images_in_tokens``), ``per_input_image_usd`` per image in the request,
    ``per_request_usd`` once per call. ``input_image_per_million_usd`` prices the image tokens of a
    prompt where the vendor bills them apart from text (gpt-image-1: $10/M against $5/M for
    text); None prices them as text. ``typical_completion_tokens`` is the smallest
    completion a budget reservation grants, ``max_output_tokens`` the largest (and never more
    than the model accepts), sent upstream as ``max_tokens_param``.
    """

    input_per_million_usd: Fraction
    output_per_million_usd: Fraction
    per_image_usd: Fraction = Fraction(0)
    typical_completion_tokens: int = DEFAULT_TYPICAL_COMPLETION_TOKENS
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    max_tokens_param: str = "max_tokens"
    input_tokens_per_image: int = DEFAULT_INPUT_TOKENS_PER_IMAGE
    per_input_image_usd: Fraction = Fraction(0)
    per_request_usd: Fraction = Fraction(0)
    input_image_per_million_usd: Fraction | None = None

    def __post_init__(self) -> None:
        # Numbers of any exact-able kind are accepted and normalised to Fraction once, here.
        for name in (*_MONEY, *_MONEY_PER_CALL):
            object.__setattr__(self, name, exact_amount(name, getattr(self, name)))
        if self.input_image_per_million_usd is not None:
            image_price = exact_amount("input_image_per_million_usd", self.input_image_per_million_usd)
            object.__setattr__(self, "input_image_per_million_usd", image_price)
        for name in _COUNTS:
            check_count(name, getattr(self, name))
        if check_count("max_output_tokens", self.max_output_tokens) < 1:
            raise ValueError("max_output_tokens must be at least 1")
        if self.max_tokens_param not in MAX_TOKENS_PARAMS:
            raise ValueError(f"max_tokens_param must be one of {', '.join(MAX_TOKENS_PARAMS)}")

    @property
    def input_micro_per_token(self) -> Fraction:
        """Micro-USD per prompt token (the per-million USD price, by definition)."""
        return self.input_per_million_usd

    @property
    def output_micro_per_token(self) -> Fraction:
        """Micro-USD per completion token."""
        return self.output_per_million_usd

    @property
    def input_image_micro_per_token(self) -> Fraction:
        """Micro-USD per image token of a prompt (the text price unless the model has its own)."""
        if self.input_image_per_million_usd is None:
            return self.input_per_million_usd
        return self.input_image_per_million_usd

    @property
    def micro_per_input_image(self) -> Fraction:
        """Micro-USD one image in the request is estimated to cost: its tokens plus any fee."""
        return (
            self.input_tokens_per_image * self.input_image_micro_per_token
            + self.per_input_image_usd * MICRO_PER_USD
        )


# ValueError, never TypeError, for bad types too: config loaders catch one exception type.
def exact_amount(where: str, value: object) -> Fraction:
    """A non-negative finite number as the exact decimal it was written as."""
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction | Decimal):
        raise ValueError(f"{where} must be a number, got {type(value).__name__} {value!r}")  # noqa: TRY004
    if isinstance(value, float | Decimal) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    # repr() of a float is the shortest decimal that round-trips: 0.3, not 0.299999...
    exact = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    if exact < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return exact


def check_count(where: str, value: object) -> int:
    """A non-negative integer (token counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} must be an integer >= 0, got {value!r}")
    return value


def round_half_up(value: Fraction) -> int:
    """The nearest integer, halves rounded up (costs are never rounded in the caller's favour)."""
    return math.floor(value + Fraction(1, 2))


def exact_cost(
    price: ModelPrice,
    prompt_tokens: int,
    completion_tokens: int,
    images: int = 0,
    input_images: int = 0,
    *,
    image_prompt_tokens: int = 0,
    images_in_tokens: bool = False,
) -> Fraction:
    """Exact micro-USD of one call; negative counts (a buggy upstream) count as zero.

    ``image_prompt_tokens`` are the part of ``prompt_tokens`` that are images; ``images_in_tokens``
    says the token counts already bill the generated images (no per-image price on top).
    """
    image_prompt = min(max(image_prompt_tokens, 0), max(prompt_tokens, 0))
    billed_images = 0 if images_in_tokens else max(images, 0)
    return (
        (max(prompt_tokens, 0) - image_prompt) * price.input_per_million_usd
        + image_prompt * price.input_image_micro_per_token
        + max(completion_tokens, 0) * price.output_per_million_usd
        + billed_images * price.per_image_usd * MICRO_PER_USD
        + max(input_images, 0) * price.per_input_image_usd * MICRO_PER_USD
        + price.per_request_usd * MICRO_PER_USD
    )


def micro_to_usd(micro: int) -> float:
    """Micro-USD to USD for display and Prometheus counters (which are floats anyway)."""
    return micro / MICRO_PER_USD


# Zero prices and generic limits: the base of a model only a TOML table or the upstream list prices.
BLANK_PRICE = ModelPrice(Fraction(0), Fraction(0))
