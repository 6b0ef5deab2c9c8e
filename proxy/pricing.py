"""Model prices and exact cost arithmetic in integer micro-USD (pure, no I/O).

Money is an ``int`` of micro-USD (1 USD = 1_000_000) everywhere in the proxy so that
budgets, ledgers and counters never accumulate float drift. A price of ``$X`` per million
tokens is exactly ``X`` micro-USD per token, which keeps the arithmetic trivial.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any

MICRO_PER_USD = 1_000_000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """List price of one model; ``typical_completion_tokens`` sizes budget reservations."""

    input_per_million_usd: float
    output_per_million_usd: float
    per_image_usd: float = 0.0
    typical_completion_tokens: int = 1000

    def __post_init__(self) -> None:
        _check_number("input_per_million_usd", self.input_per_million_usd)
        _check_number("output_per_million_usd", self.output_per_million_usd)
        _check_number("per_image_usd", self.per_image_usd)
        _check_count("typical_completion_tokens", self.typical_completion_tokens)


# ValueError, never TypeError, for bad types too: config loaders catch one exception type.
def _check_number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, got {type(value).__name__} {value!r}")  # noqa: TRY004
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_count(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} must be an integer >= 0, got {value!r}")
    return value


# List prices (USD) at time of writing (2025); providers change them, so every entry can be
# overridden in the TOML config under [pricing."model-name"]. Prompt-caching discounts,
# long-context tiers and batch prices are deliberately not modelled: the proxy reports
# what an uncached, standard request would have cost.
DEFAULT_PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        # OpenAI
        "gpt-4o": ModelPrice(2.50, 10.00),
        "gpt-4o-mini": ModelPrice(0.15, 0.60),
        "gpt-4.1": ModelPrice(2.00, 8.00),
        "gpt-4.1-mini": ModelPrice(0.40, 1.60),
        "gpt-4.1-nano": ModelPrice(0.10, 0.40),
        "o1": ModelPrice(15.00, 60.00, typical_completion_tokens=4000),
        "o3": ModelPrice(2.00, 8.00, typical_completion_tokens=4000),
        "o3-mini": ModelPrice(1.10, 4.40, typical_completion_tokens=4000),
        "o3-pro": ModelPrice(20.00, 80.00, typical_completion_tokens=4000),
        "o4-mini": ModelPrice(1.10, 4.40, typical_completion_tokens=4000),
        "gpt-5": ModelPrice(1.25, 10.00, typical_completion_tokens=4000),
        "gpt-5-mini": ModelPrice(0.25, 2.00, typical_completion_tokens=4000),
        "gpt-5-nano": ModelPrice(0.05, 0.40, typical_completion_tokens=4000),
        "gpt-3.5-turbo": ModelPrice(0.50, 1.50),
        # Anthropic
        "claude-3-haiku": ModelPrice(0.25, 1.25),
        "claude-3-5-haiku": ModelPrice(0.80, 4.00),
        "claude-3-5-sonnet": ModelPrice(3.00, 15.00),
        "claude-3-7-sonnet": ModelPrice(3.00, 15.00),
        "claude-sonnet-4": ModelPrice(3.00, 15.00),
        "claude-3-opus": ModelPrice(15.00, 75.00),
        "claude-opus-4": ModelPrice(15.00, 75.00),
        "claude-opus-4-1": ModelPrice(15.00, 75.00),
        # Google (prompts up to 200k tokens for 2.5 Pro)
        "gemini-2.5-pro": ModelPrice(1.25, 10.00, typical_completion_tokens=4000),
        "gemini-2.5-flash": ModelPrice(0.30, 2.50),
        "gemini-2.5-flash-lite": ModelPrice(0.10, 0.40),
        "gemini-2.0-flash": ModelPrice(0.10, 0.40),
        "gemini-2.0-flash-lite": ModelPrice(0.075, 0.30),
        # One image is billed as 1,290 output tokens at $30/M, i.e. $0.0387 per image.
        "gemini-2.5-flash-image-preview": ModelPrice(0.30, 30.00, typical_completion_tokens=1290),
        "gemini-2.5-flash-image": ModelPrice(0.30, 30.00, typical_completion_tokens=1290),
    }
)


@functools.lru_cache(maxsize=512)  # parsing a Fraction from text costs ~10 us; prices repeat
def _exact(value: float) -> Fraction:
    """The decimal the operator wrote (``0.3``), not its binary float approximation."""
    return Fraction(repr(float(value)))


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


class PriceTable:
    """Defaults merged with overrides; resolves provider prefixes and dated snapshots."""

    __slots__ = ("_prices",)

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None) -> None:
        merged = {name.lower(): price for name, price in DEFAULT_PRICES.items()}
        for name, price in (overrides or {}).items():
            merged[name.lower()] = price
        self._prices: Mapping[str, ModelPrice] = MappingProxyType(merged)

    @property
    def prices(self) -> Mapping[str, ModelPrice]:
        """All known models (lower-cased names), read-only."""
        return self._prices

    def lookup(self, model: str) -> ModelPrice | None:
        """Price for ``model``: exact name, then without ``provider/``, then a dated snapshot."""
        name = model.strip().lower()
        candidates = [name]
        while "/" in name:
            name = name.split("/", 1)[1]
            candidates.append(name)
        for candidate in candidates:
            price = self._prices.get(candidate)
            if price is not None:
                return price
        for candidate in candidates:
            price = self._snapshot(candidate)
            if price is not None:
                return price
        return None

    def _snapshot(self, name: str) -> ModelPrice | None:
        # Longest known prefix wins so "gpt-4o-mini-2024-07-18" is not priced as "gpt-4o".
        best: str | None = None
        for known in self._prices:
            if name.startswith(known + "-") and (best is None or len(known) > len(best)):
                best = known
        return None if best is None else self._prices[best]

    def cost_micro_usd(
        self, model: str, prompt_tokens: int, completion_tokens: int, images: int = 0
    ) -> int | None:
        """Exact cost in micro-USD, rounded half-up; ``None`` when the model is unknown.

        Negative counts (a buggy upstream) count as zero so spend can never be credited back.
        """
        price = self.lookup(model)
        if price is None:
            return None
        return _cost(price, prompt_tokens, completion_tokens, images)

    def estimate_micro_usd(
        self,
        model: str,
        prompt_tokens: int,
        max_tokens: int | None,
        images_expected: int = 0,
    ) -> int:
        """Upper-ish cost estimate to reserve against a budget before forwarding; 0 if unknown."""
        price = self.lookup(model)
        if price is None:
            return 0
        completion = price.typical_completion_tokens if max_tokens is None else max_tokens
        return _cost(price, prompt_tokens, completion, images_expected)


def _cost(price: ModelPrice, prompt_tokens: int, completion_tokens: int, images: int) -> int:
    total = (
        max(prompt_tokens, 0) * _exact(price.input_per_million_usd)
        + max(completion_tokens, 0) * _exact(price.output_per_million_usd)
        + max(images, 0) * _exact(price.per_image_usd) * MICRO_PER_USD
    )
    return _round_half_up(total)


_OVERRIDE_KEYS = frozenset(
    {"input_per_million", "output_per_million", "per_image", "typical_completion_tokens"}
)


def parse_price_overrides(table: Mapping[str, Any]) -> dict[str, ModelPrice]:
    """Turn the TOML ``[pricing."model"]`` tables into prices; ``ValueError`` says what is wrong.

    Keys a known model leaves out keep its default, so ``input_per_million`` alone is a valid
    override; a model without a default needs both per-million prices.
    """
    defaults = PriceTable()
    result: dict[str, ModelPrice] = {}
    for model, entry in table.items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"pricing: model name must be a non-empty string, got {model!r}")
        if not isinstance(entry, Mapping):
            raise ValueError(f'pricing."{model}" must be a table, got {type(entry).__name__}')  # noqa: TRY004
        unknown = sorted(set(entry) - _OVERRIDE_KEYS)
        if unknown:
            raise ValueError(
                f'pricing."{model}": unknown key(s) {", ".join(map(str, unknown))}; '
                f"allowed: {', '.join(sorted(_OVERRIDE_KEYS))}"
            )
        base = defaults.lookup(model)
        missing = [k for k in ("input_per_million", "output_per_million") if k not in entry]
        if base is None and missing:
            raise ValueError(f'pricing."{model}": unknown model needs {" and ".join(missing)}')
        fallback = base or ModelPrice(0.0, 0.0)
        where = f'pricing."{model}".'
        result[model] = ModelPrice(
            input_per_million_usd=_check_number(
                where + "input_per_million",
                entry.get("input_per_million", fallback.input_per_million_usd),
            ),
            output_per_million_usd=_check_number(
                where + "output_per_million",
                entry.get("output_per_million", fallback.output_per_million_usd),
            ),
            per_image_usd=_check_number(where + "per_image", entry.get("per_image", fallback.per_image_usd)),
            typical_completion_tokens=_check_count(
                where + "typical_completion_tokens",
                entry.get("typical_completion_tokens", fallback.typical_completion_tokens),
            ),
        )
    return result


def micro_to_usd(micro: int) -> float:
    """Micro-USD to USD for display and Prometheus counters (which are floats anyway)."""
    return micro / MICRO_PER_USD
