"""What the flow works with: the app's services, opened by its cleanup contexts and handed over once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.keys.verify import UpstreamRefusal

if TYPE_CHECKING:
    import aiohttp

    from proxy.budget.guard import BudgetGuard
    from proxy.cache.response import ResponseCache
    from proxy.config import Settings
    from proxy.flight.flights import SingleFlight
    from proxy.keys.auth import KeyAuthenticator
    from proxy.keys.verify import CallerVerifier
    from proxy.obs.accounting import Accountant
    from proxy.obs.metrics import ProxyMetrics


@dataclass(frozen=True, slots=True)
class Services:
    """Everything one request may need; the budget guard is plugged in by the app factory (the
    pipeline names its type only for the type checker, so importing the flow loads no budget code)."""

    settings: Settings
    cache: ResponseCache
    flights: SingleFlight
    session: aiohttp.ClientSession
    auth: KeyAuthenticator
    verifier: CallerVerifier
    budgets: BudgetGuard
    accountant: Accountant
    metrics: ProxyMetrics

    async def refusal(self, bearer: str | None, secret: str | None = None) -> web.Response | None:
        """None when this caller may be served a cached answer (a managed key, or a pass-through
        bearer the upstream accepts); else the upstream's refusal, to answer as it is.
        ``secret``: the bearer's ``hash_secret``, when known."""
        if bearer is None:
            return None
        try:
            await self.verifier.ensure(bearer, secret)
        except UpstreamRefusal as refusal:
            return web.Response(status=refusal.status, body=refusal.body, content_type="application/json")
        return None
