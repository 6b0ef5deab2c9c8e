"""Per-key spend budgets: atomic reserve-then-settle, a spend ledger and an RPM limiter.

A request reserves an estimate before it is forwarded and settles to the real cost after, so N
concurrent requests can never spend more than the budget. A reservation that is never settled
(the proxy crashed) is turned into spend once it expires, so spend is never lost. Money is
integer micro-USD throughout. The values and protocol live in ``budget_types``, the backends in
``budget_memory`` (in-process) and ``budget_redis`` (shared by replicas); this module is their
public face.
"""

from __future__ import annotations

from proxy.budget_memory import MemoryBudgetLedger
from proxy.budget_redis import RedisBudgetLedger
from proxy.budget_types import (
    DEFAULT_LEDGER_MAXLEN,
    DEFAULT_RESERVATION_TTL_S,
    LATE_SETTLE_GRACE_S,
    BudgetLedger,
    BudgetRefusal,
    BudgetStatus,
    CompletionGrant,
    ModelUsage,
    Reservation,
    UsageSummary,
    summarise,
)

__all__ = [
    "DEFAULT_LEDGER_MAXLEN",
    "DEFAULT_RESERVATION_TTL_S",
    "LATE_SETTLE_GRACE_S",
    "BudgetLedger",
    "BudgetRefusal",
    "BudgetStatus",
    "CompletionGrant",
    "MemoryBudgetLedger",
    "ModelUsage",
    "RedisBudgetLedger",
    "Reservation",
    "UsageSummary",
    "summarise",
]
