"""What a single flight ends with, and the leader's handle on it (shared by both halves)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from proxy.cache.entry import CachedEntry

Kind = Literal["entry", "stored", "error", "retry"]


@dataclass(frozen=True, slots=True)
class FlightResult:
    """How a flight ended: an entry to serve, an error to repeat, or "try again yourself"."""

    kind: Kind
    entry: CachedEntry | None = None
    status: int = 0
    body: bytes = b""
    late: bool = False  # this follower arrived after the leader had already answered


RETRY = FlightResult("retry")


@dataclass(slots=True)
class Leadership:
    """Held by the one request that goes upstream; ``finish`` must be called exactly once."""

    digest: str
    future: asyncio.Future[FlightResult]
    token: str | None = None
    # The lock's refresh: a timer until the first one is due, then the task that keeps refreshing
    # (``SingleFlight._heartbeat``); ``finish`` cancels whichever it is.
    heartbeat: asyncio.TimerHandle | asyncio.Task[None] | None = None
    entry_absent: bool = False  # the store had no entry when the lock was taken
    answered: bool = False  # the leader's client has its answer; only storing is left
    # The entry was stored by the flight's own end script (lock dropped, outcome published):
    # ``finish`` only hands the result to local followers.
    announced: bool = False
    done: bool = field(default=False)


@dataclass(frozen=True, slots=True)
class Claim:
    """What one round trip to Redis found: the entry record, or (none) whether we now lead.

    ``SingleFlight.claim`` reads the record and, only when there is none, takes the flight's lock
    in the same script, so a miss costs one round trip instead of two. ``token`` is the lock taken
    (hand it to ``join``); None with no record means another replica leads.
    """

    record: bytes | None
    token: str | None = None
