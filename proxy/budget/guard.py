"""Budget enforcement on the request path: RPM limit, reserve before forwarding, settle after.

The ledger does the atomic work (one Lua script per step in Redis); ``budget_plan`` decides what
to reserve and which bound goes upstream; this module applies it, settles what a request finally
cost, and tells the client why it is refused. A key with a budget never uses a model nothing
prices (403, unless ``PROXY_ALLOW_UNPRICED_MODELS``) nor a state Redis that may evict its budget
(503). A budget store that cannot be reached refuses keys with a budget (503) when
``PROXY_BUDGET_FAIL_CLOSED``, otherwise lets them through unmetered, and never hangs: every call
is bounded in time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from proxy.budget.errors import budget_exceeded, model_not_priced, rate_limited
from proxy.budget.plan import plan_reservation
from proxy.budget.state_store import StateStoreGuard
from proxy.budget.types import BudgetLedger, BudgetRefusal, Reservation
from proxy.keys.auth import model_not_allowed, store_unavailable
from proxy.keys.store import ManagedKey
from proxy.obs.accounting import Accountant
from proxy.obs.metrics import ProxyMetrics
from proxy.obs.usage import Demand, Usage
from proxy.storage.base import StoreUnavailable, guarded

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Admitted:
    """A reserved miss: the reservation (None when unmetered) and the fields to set upstream."""

    reservation: Reservation | None = None
    bound: Mapping[str, int] = field(default_factory=dict)  # e.g. {"max_tokens": granted units}


class BudgetGuard:
    """Applies a managed key's limits around one request, against a shared BudgetLedger."""

    def __init__(
        self,
        ledger: BudgetLedger,
        accountant: Accountant,
        metrics: ProxyMetrics,
        *,
        timeout: float,
        reservation_ttl_s: int,
        fail_closed: bool,
        charge_hits: bool,
        allow_unpriced: bool = False,
        state: StateStoreGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.accountant = accountant
        self.metrics = metrics
        self.timeout = timeout
        self.reservation_ttl_s = reservation_ttl_s
        self.fail_closed = fail_closed
        self.charge_hits = charge_hits
        self.allow_unpriced = allow_unpriced
        self.state = state
        self._clock = clock

    async def _call(self, op: str, step: Awaitable[T]) -> T:
        try:
            async with guarded(op, self.timeout):
                return await step
        except StoreUnavailable:
            self.metrics.store_errors.labels(op).inc()
            raise

    def _enforced(self, key: ManagedKey) -> bool:
        return key.budget_micro is not None and self.fail_closed

    async def admit(self, key: ManagedKey, model: str) -> None:
        """Checks before anything else happens: allowed model (403), a price for it and a state
        store that keeps budgets (403/503, keys with a budget), requests per minute (429)."""
        if not key.allows_model(model):
            raise model_not_allowed(key, model)
        if key.budget_micro is not None:
            if not self.allow_unpriced and self.accountant.prices.lookup(model) is None:
                raise model_not_priced(key, model)
            if self.state is not None:
                await self.state.ensure_safe()
        if key.rpm is None:
            return
        try:
            allowed = await self._call("budget", self.ledger.allow_request(key.id, key.rpm))
        except StoreUnavailable:
            if self._enforced(key):
                raise store_unavailable("budget") from None
            return
        if not allowed:
            raise rate_limited(key, max(1, 60 - int(self._clock() % 60)))

    async def reserve(self, key: ManagedKey, model: str, demand: Demand) -> Admitted:
        """Set the estimate aside and size the completion bound (429 if even the smallest does
        not fit); unmetered (no reservation, no bound) when the store is down and we fail open."""
        prices = self.accountant.prices
        plan = plan_reservation(
            prices.lookup(model),
            demand,
            budgeted=key.budget_micro is not None,
            image_price=prices.lookup(demand.image_model) if demand.image_model is not None else None,
        )
        try:
            result = await self._call(
                "budget",
                self.ledger.reserve(
                    key.id,
                    key.budget_micro,
                    key.period,
                    plan.fixed_micro,
                    self.reservation_ttl_s,
                    model=model,
                    grant=plan.grant,
                ),
            )
        except StoreUnavailable:
            log.warning(
                "budget store unreachable; key %s %s",
                key.alias,
                "refused" if self._enforced(key) else "unmetered",
            )
            if self._enforced(key):
                raise store_unavailable("budget") from None
            return Admitted()
        if isinstance(result, BudgetRefusal):
            self.metrics.budget_rejections.labels(self.metrics.key_label(key.alias)).inc()
            self._publish(key, result.spent_micro + result.reserved_micro)
            raise budget_exceeded(key, result, datetime.fromtimestamp(self._clock(), UTC))
        return Admitted(result, dict.fromkeys(plan.bound_fields, result.granted_units))

    async def settle(
        self,
        key: ManagedKey,
        reservation: Reservation | None,
        *,
        model: str,
        usage: Mapping[str, Any] | None,
        cost_micro: int | None,
        billed_unknown: bool,
    ) -> None:
        """Replace the reservation by the real cost from ``usage``.

        Without usage: ``billed_unknown`` (the upstream started answering, then the stream broke)
        keeps the estimate as spend, since the generation may well have been billed; otherwise
        (an upstream error) the reservation is released.
        """
        tokens = Usage.from_mapping(dict(usage) if usage is not None else None)
        try:
            if reservation is None:
                if cost_micro:
                    await self._call("budget", self._charge(key, model, cost_micro, tokens, "miss", saved=0))
            elif cost_micro is not None or billed_unknown:
                actual = cost_micro if cost_micro is not None else reservation.estimate_micro
                await self._settle(reservation, actual, model, tokens, "miss")
            else:
                await self._call("budget", self.ledger.release(reservation))
        except StoreUnavailable as exc:
            # The reservation stands and turns into spend when it expires: nothing is lost.
            log.warning("budget settle failed for key %s: %s", key.alias, type(exc.__cause__).__name__)
            return
        await self.publish(key)

    async def _settle(
        self, reservation: Reservation, actual: int, model: str, tokens: Usage, cache_result: str
    ) -> None:
        await self._call(
            "budget",
            self.ledger.settle(
                reservation,
                actual,
                model=model,
                prompt_tokens=tokens.prompt_tokens,
                completion_tokens=tokens.completion_tokens,
                cache_result=cache_result,
            ),
        )

    async def release(self, key: ManagedKey, reservation: Reservation | None) -> None:
        """Give the reservation back: the upstream never answered, so nothing was billed."""
        if reservation is None:
            return
        try:
            await self._call("budget", self.ledger.release(reservation))
        except StoreUnavailable as exc:
            log.warning("budget release failed for key %s: %s", key.alias, type(exc.__cause__).__name__)

    async def on_hit(self, key: ManagedKey, model: str, usage: Usage, saved_micro: int) -> None:
        """A cache hit: free (recorded as savings) unless ``PROXY_CHARGE_CACHE_HITS``, then charged."""
        if not self.charge_hits:
            # Savings bookkeeping only; the hit is served regardless.
            with contextlib.suppress(StoreUnavailable):
                await self._call("budget", self._charge(key, model, 0, usage, "hit", saved=saved_micro))
            return
        reservation = await self.reserve_exact(key, model, saved_micro)
        if reservation is not None:
            try:
                await self._settle(reservation, saved_micro, model, usage, "hit")
            except StoreUnavailable:
                return
            await self.publish(key)

    async def reserve_exact(self, key: ManagedKey, model: str, amount: int) -> Reservation | None:
        """Reserve a known amount (a charged hit); 429 when it does not fit."""
        try:
            result = await self._call(
                "budget",
                self.ledger.reserve(key.id, key.budget_micro, key.period, amount, 60, model=model),
            )
        except StoreUnavailable:
            if self._enforced(key):
                raise store_unavailable("budget") from None
            return None
        if isinstance(result, BudgetRefusal):
            self.metrics.budget_rejections.labels(self.metrics.key_label(key.alias)).inc()
            raise budget_exceeded(key, result, datetime.fromtimestamp(self._clock(), UTC))
        return result

    def _charge(
        self, key: ManagedKey, model: str, micro: int, usage: Usage, cache: str, *, saved: int
    ) -> Awaitable[None]:
        return self.ledger.charge(
            key.id,
            key.period,
            micro,
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cache_result=cache,
            saved_micro=saved,
        )

    async def publish(self, key: ManagedKey) -> None:
        """Refresh the key's budget gauges from the ledger (best effort)."""
        if key.budget_micro is None:
            return
        try:
            status = await self._call("budget", self.ledger.status(key.id, key.budget_micro, key.period))
        except StoreUnavailable:
            return
        self._publish(key, status.spent_micro + status.reserved_micro)

    def _publish(self, key: ManagedKey, used_micro: int) -> None:
        if key.budget_micro is not None:
            self.metrics.set_key_budget(key.alias, key.budget_micro, key.budget_micro - used_micro)
