"""Turning usage into money and metrics: what a call cost, what a hit saved."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from proxy.obs.logs import clip
from proxy.obs.metrics import ProxyMetrics
from proxy.obs.pricing import PriceTable
from proxy.obs.stats import TrafficStats
from proxy.obs.usage import Usage
from proxy.util.memo import remember

log = logging.getLogger(__name__)

_UNPRICED_LOGGED_MAX = 1000  # distinct model names warned about (names are client-controlled)
_MEMO_LIMIT = 4096  # remembered costs and names per table


class Accountant:
    """Prices usage with the table and records it; warns once per model the table cannot price.

    ``prices`` is replaced whole when the upstream's price list is refreshed
    (``proxy.obs.upstream_prices``); a table is immutable, so a request sees one consistent table.
    What a table says is remembered until it is replaced (bounded: names are client-controlled):
    every cache hit prices itself and labels its model, and exact ``Fraction`` arithmetic per hit
    would cost more than the rest of a hot hit's accounting.
    """

    def __init__(self, prices: PriceTable, metrics: ProxyMetrics) -> None:
        self.metrics = metrics
        self._unknown_logged: set[str] = set()
        self._costs: dict[tuple[str, int, int, int, int, int, bool], int | None] = {}
        self._named: dict[str, bool] = {}
        self.prices = prices
        # The console's overview (``obs.stats``), plugged in by the app when the console is on.
        self.stats: TrafficStats | None = None

    @property
    def prices(self) -> PriceTable:
        """The price table in use."""
        return self._prices

    @prices.setter
    def prices(self, table: PriceTable) -> None:
        self._prices = table
        self._costs.clear()
        self._named.clear()
        self.metrics.forget_models()  # a model's label follows the table (ProxyMetrics.model_label)

    def priced(self, name: str) -> bool:
        """Whether the table in use lists ``name`` (lower-cased) itself: such a model has a metric
        label of its own (``ProxyMetrics.model_label``), following the live table."""
        named = self._named.get(name)
        if named is None:
            named = self._prices.names(name)
            remember(self._named, name, named, _MEMO_LIMIT)
        return named

    def unpriced(self, model: str, why: str) -> None:
        """Count a call of a model nothing prices, and say so once per model."""
        self.metrics.unknown_model.labels(self.metrics.model_label(model)).inc()
        if model not in self._unknown_logged and len(self._unknown_logged) < _UNPRICED_LOGGED_MAX:
            self._unknown_logged.add(model)
            log.warning("no price for model %s: %s", clip(model), why)

    def cost(self, model: str, usage: Usage) -> int:
        """Micro-USD for ``usage`` on ``model``, plus images another model made at that model's
        ``per_image`` (``Usage.image_model``); 0 (counted and logged once) for an unpriced model."""
        return self._split(model, usage, self._priced)

    @staticmethod
    def _split(model: str, usage: Usage, price: Callable[[str, Usage], int]) -> int:
        """``usage`` priced on ``model``, its images on ``usage.image_model`` when another model made them."""
        if usage.image_model is None:
            return price(model, usage)
        images = price(usage.image_model, Usage(images=usage.images)) if usage.images else 0
        return price(model, replace(usage, images=0, image_model=None)) + images

    def _priced(self, model: str, usage: Usage) -> int:
        """The memoised price; 0 (counted and logged once) for an unpriced model."""
        cost = self._price(model, usage)
        if cost is None:
            self.unpriced(model, "its cost is counted as 0")
            return 0
        return cost

    def _price(self, model: str, usage: Usage) -> int | None:
        # The counts themselves, not the Usage: its dataclass __hash__ and __eq__ are Python
        # calls, and every cache hit prices itself here.
        key = (
            model,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.images,
            usage.input_images,
            usage.image_prompt_tokens,
            usage.images_in_tokens,
        )
        try:
            return self._costs[key]
        except KeyError:
            cost = self._prices.cost_micro_usd(
                model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.images,
                usage.input_images,
                image_prompt_tokens=usage.image_prompt_tokens,
                images_in_tokens=usage.images_in_tokens,
            )
            remember(self._costs, key, cost, _MEMO_LIMIT)
            return cost

    def spent(self, model: str, key_alias: str | None, usage: Usage, *, endpoint: str) -> int:
        """Record an upstream call of ``endpoint`` (its name); returns its cost in micro-USD."""
        cost = self.cost(model, usage)
        self.metrics.record_usage(
            model,
            key_alias,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost,
            usage.images,
            endpoint=endpoint,
        )
        if self.stats is not None:
            self.stats.spent(self.metrics.model_label(model), self.metrics.key_label(key_alias), cost)
        return cost

    def saved(self, model: str, key_alias: str | None, usage: Usage, *, endpoint: str) -> int:
        """Record a cache hit of ``endpoint``: what it would have cost upstream."""
        cost = self.cost(model, usage)
        self.metrics.record_saved(
            model,
            key_alias,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost,
            usage.images,
            endpoint=endpoint,
        )
        if self.stats is not None:
            self.stats.saved(self.metrics.model_label(model), self.metrics.key_label(key_alias), cost)
        return cost

    def entry_cost(self, model: str, usage: Usage) -> int:
        """What an upstream call with ``usage`` costs (micro-USD), recorded nowhere: the console's
        price of a cached entry (0 unpriced: the call itself was counted as such)."""
        return self._split(model, usage, lambda name, part: self._price(name, part) or 0)
