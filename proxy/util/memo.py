"""The bounded memo of the hot path: remember a computed value, forget everything when full."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Keep ``value`` under ``key`` in ``memo`` (at most ``limit`` entries) and return it.

    Full means cleared, not evicted one at a time: these memos hold what a proxy meets all day (a
    few paths, models, bearers, label sets, token counts), so a clear is rare and refills at once,
    and a lookup stays a plain dict get (no recency to update on every hit, unlike ``ByteLRU``).
    A client cycling through endless distinct values can only make the memo miss, never grow.
    """
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
