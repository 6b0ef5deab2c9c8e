"""The price table: which price applies to a model name, and the TOML ``[pricing]`` parser (pure).

Precedence, first match wins (README "Prices"):

1. TOML ``[pricing."model"]`` — the operator's word; keys it leaves out keep the price below;
2. the upstream's model list (``proxy.obs.upstream_prices``, loaded in the background);
3. the built-in table (``proxy.obs.price_defaults``);
4. TOML ``[pricing."*"]`` — a default for every model nothing above can price;
5. none: the model is unpriced (cost 0 for pass-through and keys without a budget; refused for
   keys with one unless ``PROXY_ALLOW_UNPRICED_MODELS``).

Within one table a name matches exactly (case-insensitive), then without ``provider/``
prefixes, then without a dated or versioned snapshot suffix. Nothing else is stripped: a
longest-prefix rule would price ``gpt-5-pro`` as ``gpt-5`` and ``o1-pro`` as ``o1``, at a
fraction of their real price.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from proxy.obs.model_price import (
    BLANK_PRICE,
    MICRO_PER_USD,
    ModelPrice,
    check_count,
    exact_amount,
    exact_cost,
    micro_to_usd,
    round_half_up,
)
from proxy.obs.price_defaults import DEFAULT_PRICES
from proxy.util.memo import remember

__all__ = [
    "DEFAULT_PRICES",
    "MICRO_PER_USD",
    "ModelPrice",
    "PriceOverride",
    "PriceTable",
    "PricingConfig",
    "micro_to_usd",
    "parse_pricing",
]

DEFAULT_KEY = "*"
# A snapshot of the same model: -2024-08-06 (OpenAI), -20250514 (Anthropic), -0125 (OpenAI 2023),
# -001 (Gemini), -latest, @20240620 (Vertex). Only one suffix, only at the end.
_SNAPSHOT = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}|-0\d{2}|-latest|@\d{8})$")
_MEMO_LIMIT = 4096  # distinct model names remembered per table (names are client-controlled)


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """A TOML ``[pricing."model"]`` table: only the fields the operator wrote."""

    changes: tuple[tuple[str, Any], ...]

    def apply(self, base: ModelPrice) -> ModelPrice:
        """``base`` with the operator's fields replacing its own."""
        return replace(base, **dict(self.changes))

    @property
    def prices_both(self) -> bool:
        """Both per-token prices given: a complete price even for a model nobody else knows."""
        names = {name for name, _ in self.changes}
        return {"input_per_million_usd", "output_per_million_usd"} <= names


@dataclass(frozen=True, slots=True)
class PricingConfig:
    """What the TOML ``[pricing]`` section says: per-model overrides and the ``"*"`` default."""

    overrides: Mapping[str, PriceOverride]
    default: ModelPrice | None = None


def candidates(model: str) -> list[str]:
    """Names to try for ``model``, most specific first (see the module docstring)."""
    name = model.strip().lower()
    names = [name]
    while "/" in name:
        name = name.split("/", 1)[1]
        names.append(name)
    for known in list(names):
        stripped = _SNAPSHOT.sub("", known, count=1)
        if stripped and stripped not in names:
            names.append(stripped)
    return names


def _first(table: Mapping[str, ModelPrice], names: list[str]) -> ModelPrice | None:
    for name in names:
        price = table.get(name)
        if price is not None:
            return price
    return None


class PriceTable:
    """Overrides, upstream list, built-in defaults and the ``"*"`` default, in that order.

    Immutable: refreshing the upstream prices builds a new table (``with_upstream``). The only
    state is a bounded memo of resolved names, since the cache-hit path prices every hit.
    """

    __slots__ = ("_builtin", "_default", "_memo", "_overrides", "_upstream")

    def __init__(
        self,
        overrides: Mapping[str, ModelPrice | PriceOverride] | None = None,
        *,
        upstream: Mapping[str, ModelPrice] | None = None,
        default: ModelPrice | None = None,
        builtin: Mapping[str, ModelPrice] = DEFAULT_PRICES,
    ) -> None:
        self._overrides = MappingProxyType({k.lower(): v for k, v in (overrides or {}).items()})
        self._upstream = MappingProxyType({k.lower(): v for k, v in (upstream or {}).items()})
        self._builtin = MappingProxyType({k.lower(): v for k, v in builtin.items()})
        self._default = default
        self._memo: dict[str, ModelPrice | None] = {}

    @classmethod
    def from_config(cls, config: PricingConfig) -> PriceTable:
        """The table for a parsed TOML ``[pricing]`` section (no upstream prices yet)."""
        return cls(config.overrides, default=config.default)

    def with_upstream(self, upstream: Mapping[str, ModelPrice]) -> PriceTable:
        """The same table with a fresh upstream price list."""
        return PriceTable(self._overrides, upstream=upstream, default=self._default, builtin=self._builtin)

    @property
    def upstream(self) -> Mapping[str, ModelPrice]:
        """The upstream list in use (lower-cased names), read-only."""
        return self._upstream

    @property
    def prices(self) -> Mapping[str, ModelPrice]:
        """The built-in table (lower-cased names), read-only."""
        return self._builtin

    def names(self, name: str) -> bool:
        """Whether ``name`` (lower-cased) is a model some table lists by that exact name (the
        TOML overrides, the upstream list or the built-in table; not the ``"*"`` default)."""
        return name in self._overrides or name in self._upstream or name in self._builtin

    def lookup(self, model: str) -> ModelPrice | None:
        """The price that applies to ``model``, or None when nothing prices it."""
        try:
            return self._memo[model]
        except KeyError:
            pass
        return remember(self._memo, model, self._resolve(model), _MEMO_LIMIT)

    def _resolve(self, model: str) -> ModelPrice | None:
        names = candidates(model)
        base = _first(self._upstream, names) or _first(self._builtin, names)
        for name in names:
            override = self._overrides.get(name)
            if isinstance(override, ModelPrice):
                return override
            if override is not None and (base is not None or override.prices_both):
                return override.apply(base or BLANK_PRICE)
        return base or self._default

    def cost_micro_usd(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        images: int = 0,
        input_images: int = 0,
        *,
        image_prompt_tokens: int = 0,
        images_in_tokens: bool = False,
    ) -> int | None:
        """Exact cost in micro-USD, rounded half-up; ``None`` when the model is unpriced.

        Negative counts (a buggy upstream) count as zero so spend can never be credited back.
        """
        price = self.lookup(model)
        if price is None:
            return None
        exact = exact_cost(
            price,
            prompt_tokens,
            completion_tokens,
            images,
            input_images,
            image_prompt_tokens=image_prompt_tokens,
            images_in_tokens=images_in_tokens,
        )
        return round_half_up(exact)


# TOML key -> ModelPrice field.
_TOML_KEYS = {
    "input_per_million": "input_per_million_usd",
    "output_per_million": "output_per_million_usd",
    "per_image": "per_image_usd",
    "per_input_image": "per_input_image_usd",
    "per_request": "per_request_usd",
    "input_image_per_million": "input_image_per_million_usd",
    "typical_completion_tokens": "typical_completion_tokens",
    "max_output_tokens": "max_output_tokens",
    "max_tokens_param": "max_tokens_param",
    "input_tokens_per_image": "input_tokens_per_image",
}
_MONEY_KEYS = frozenset(
    {
        "input_per_million",
        "output_per_million",
        "per_image",
        "per_input_image",
        "per_request",
        "input_image_per_million",
    }
)


def _field(where: str, key: str, value: object) -> Any:
    if key in _MONEY_KEYS:
        return exact_amount(where, value)
    if key == "max_tokens_param":
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    return check_count(where, value)


def parse_pricing(table: Mapping[str, Any]) -> PricingConfig:
    """The TOML ``[pricing]`` section; ``ValueError`` says exactly what is wrong.

    A model the built-in table knows may override only some keys; any other model (and the
    ``"*"`` default) needs both per-million prices, since nothing else is sure to price it.
    """
    overrides: dict[str, PriceOverride] = {}
    default: ModelPrice | None = None
    builtin = PriceTable()
    for model, entry in table.items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"pricing: model name must be a non-empty string, got {model!r}")
        if not isinstance(entry, Mapping):
            raise ValueError(f'pricing."{model}" must be a table, got {type(entry).__name__}')  # noqa: TRY004
        unknown = sorted(set(entry) - set(_TOML_KEYS))
        if unknown:
            raise ValueError(
                f'pricing."{model}": unknown key(s) {", ".join(map(str, unknown))}; '
                f"allowed: {', '.join(sorted(_TOML_KEYS))}"
            )
        changes = tuple(
            (_TOML_KEYS[key], _field(f'pricing."{model}".{key}', key, value)) for key, value in entry.items()
        )
        override = PriceOverride(changes)
        base = None if model == DEFAULT_KEY else builtin.lookup(model)
        missing = [k for k in ("input_per_million", "output_per_million") if k not in entry]
        if base is None and missing:
            what = "the default price" if model == DEFAULT_KEY else "a model without a built-in price"
            raise ValueError(f'pricing."{model}": {what} needs {" and ".join(missing)}')
        try:
            resolved = override.apply(base or BLANK_PRICE)  # validates every field together
        except ValueError as exc:
            raise ValueError(f'pricing."{model}": {exc}') from None
        if model == DEFAULT_KEY:
            default = resolved
        else:
            overrides[model] = override
    return PricingConfig(MappingProxyType(overrides), default)
