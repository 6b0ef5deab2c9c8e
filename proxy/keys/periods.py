"""Budget periods: which window a moment falls in and when that window resets (UTC)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

Period = Literal["day", "month", "total"]
PERIODS: tuple[Period, ...] = get_args(Period)

# Seconds since the epoch; injected so tests can move time without sleeping.
Clock = Callable[[], float]


def parse_period(value: str) -> Period:
    """Validate a period name coming from config, the admin API or storage."""
    for period in PERIODS:
        if value == period:
            return period
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {value!r}")


def as_utc(now: datetime) -> datetime:
    """Aware datetimes are converted to UTC; naive ones are taken to already be UTC."""
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


def period_window(period: Period, now: datetime) -> tuple[str, datetime | None]:
    """Return the id of the window `now` falls in and the UTC moment it resets (None for total).

    Ids are stable strings ("d2026-11-25", "m2026-11", "total") used in storage keys, so two
    replicas agree on the window without talking to each other.
    """
    now = as_utc(now)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return f"d{start:%Y-%m-%d}", start + timedelta(days=1)
    if period == "month":
        if now.month == 12:
            reset = datetime(now.year + 1, 1, 1, tzinfo=UTC)
        else:
            reset = datetime(now.year, now.month + 1, 1, tzinfo=UTC)
        return f"m{now:%Y-%m}", reset
    if period == "total":
        return "total", None
    raise ValueError(f"unknown period {period!r}")


def window_at(period: Period, epoch_s: float) -> tuple[str, datetime | None]:
    """`period_window` for a clock reading in epoch seconds."""
    return period_window(period, datetime.fromtimestamp(epoch_s, UTC))


def spend_ttl_s(period: Period) -> int | None:
    """Seconds a spend counter is kept after its last write (None: forever).

    Counters outlive their window a little so a late settle still finds them, then the
    store forgets them on its own.
    """
    if period == "day":
        return 2 * 86400
    if period == "month":
        return 40 * 86400
    return None
