"""Turning usage into money and metrics: what a call cost, what a hit saved."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from proxy.logs import clip
from proxy.metrics import ProxyMetrics
from proxy.pricing import PriceTable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response (0 where the upstream did not say)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0

    @classmethod
    def from_mapping(cls, usage: dict[str, Any] | None, images: int = 0) -> Usage:
        """Read an OpenAI ``usage`` object defensively: upstreams omit or null fields."""
        usage = usage or {}

        def count(name: str) -> int:
            value = usage.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

        return cls(count("prompt_tokens"), count("completion_tokens"), images)


class Accountant:
    """Prices usage with the table and records it; warns once per model the table does not know."""

    def __init__(self, prices: PriceTable, metrics: ProxyMetrics) -> None:
        self.prices = prices
        self.metrics = metrics
        self._unknown_logged: set[str] = set()

    def cost(self, model: str, usage: Usage) -> int:
        """Micro-USD for ``usage`` on ``model``; 0 (counted and logged once) for an unknown model."""
        cost = self.prices.cost_micro_usd(model, usage.prompt_tokens, usage.completion_tokens, usage.images)
        if cost is None:
            self.metrics.unknown_model.labels(self.metrics.model_label(model)).inc()
            if model not in self._unknown_logged and len(self._unknown_logged) < 1000:
                self._unknown_logged.add(model)
                log.warning("no price for model %r: its cost is counted as 0", clip(model))
            return 0
        return cost

    def spent(self, model: str, key_alias: str | None, usage: Usage) -> int:
        """Record an upstream call; returns its cost in micro-USD."""
        cost = self.cost(model, usage)
        self.metrics.record_usage(
            model, key_alias, usage.prompt_tokens, usage.completion_tokens, cost, usage.images
        )
        return cost

    def saved(self, model: str, key_alias: str | None, usage: Usage) -> int:
        """Record a cache hit: what it would have cost upstream."""
        cost = self.cost(model, usage)
        self.metrics.record_saved(
            model, key_alias, usage.prompt_tokens, usage.completion_tokens, cost, usage.images
        )
        return cost
