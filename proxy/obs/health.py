"""What this replica can do right now: the answer of ``/readyz`` and the ``llm_proxy_degraded`` gauge.

Readiness means "this pod can serve". With Redis down every replica still serves (cache bypassed,
``X-Cache: BYPASS``), so a 503 then would make Kubernetes drop every pod from the Service at once
for an outage the proxy rides out; it is reported as *degraded* (body and gauge) instead. Only a
replica that is draining after SIGTERM answers 503, so new traffic goes elsewhere while its
requests in flight finish (``web.server.ProxyRunner.stop``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

STORE = "store"
STATE_STORE = "state_store"  # keys and budgets (proxy.budget.state_store reports it)


class Health:
    """Degraded components and the draining flag of one process.

    Parts of the proxy report into it: ``report("store", "unreachable")`` while Redis does not
    answer, ``report("store", None)`` once it does (the budget state store reports as
    ``"state_store"`` the same way). ``on_change(component, degraded)`` mirrors it into a metric.
    """

    __slots__ = ("_draining", "_on_change", "_problems")

    def __init__(
        self,
        on_change: Callable[[str, bool], None] | None = None,
        components: tuple[str, ...] = (STORE, STATE_STORE),
    ) -> None:
        self._problems: dict[str, str] = {}
        self._draining = False
        self._on_change = on_change
        for component in components:  # every gauge series exists (at 0) from the start
            self._notify(component, degraded=False)

    @property
    def draining(self) -> bool:
        """True once shutdown began: readiness fails so traffic moves to other replicas."""
        return self._draining

    def start_draining(self) -> None:
        """Shutdown began (SIGTERM)."""
        self._draining = True

    def report(self, component: str, problem: str | None) -> None:
        """``component`` is degraded for ``problem`` (a short fixed phrase), or fine again (None)."""
        before = component in self._problems
        if problem is None:
            self._problems.pop(component, None)
        else:
            self._problems[component] = problem
        if before != (problem is not None):
            self._notify(component, degraded=problem is not None)

    def reporter(self, component: str) -> Callable[[str | None], None]:
        """``report`` bound to one component, for a part that only ever reports about itself."""
        return lambda problem: self.report(component, problem)

    def degraded(self) -> dict[str, str]:
        """Degraded components and why."""
        return dict(self._problems)

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """Status and body of ``/readyz``: 503 only while draining."""
        body: dict[str, Any] = {"status": "ok"}
        if self._problems:
            body = {"status": "degraded", "degraded": self.degraded()}
        if self._draining:
            return 503, {**body, "status": "draining"}
        return 200, body

    def _notify(self, component: str, *, degraded: bool) -> None:
        if self._on_change is not None:
            self._on_change(component, degraded)
