"""Which pass-through ``/v1`` routes a managed (proxy-issued) key may call.

A managed request reaches the upstream with the proxy's own key, so anything not metered or free
would spend that key outside every budget (stored completions, files, batches, fine-tunes...).
The list is exact: method plus a full match on the checked, decoded path (``web.paths.Target``), and
every other route is 403 ``endpoint_not_allowed``. The cached endpoints (``proxy.app.ENDPOINTS``:
chat completions, images, embeddings, ...) are not pass-through: the pipeline admits them (a key's
``endpoints`` list, ``ManagedKey.allows_endpoint``), reserves and settles them. A free, uncached
route a managed key should reach gets a row here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.keys.settings import ManagedKey

_READ = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class ManagedRoute:
    """One allowed route: a name for settings and errors, its methods, its path pattern."""

    name: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    shown: str  # how errors name it: "GET /v1/models"

    def matches(self, method: str, path: str) -> bool:
        """Exact method and a full match of the decoded path."""
        return method in self.methods and self.pattern.fullmatch(path) is not None


# Model ids are one segment (``gpt-4o``, ``ft:gpt-4o:org::id``); dot segments never get here.
MANAGED_ROUTES: tuple[ManagedRoute, ...] = (
    ManagedRoute("models.list", _READ, re.compile(r"/v1/models"), "GET /v1/models"),
    ManagedRoute("models.retrieve", _READ, re.compile(r"/v1/models/[^/]+"), "GET /v1/models/{id}"),
)


def managed_route(
    method: str, path: str, routes: tuple[ManagedRoute, ...] = MANAGED_ROUTES
) -> ManagedRoute | None:
    """The route a managed key's request is allowed under, or None (refuse it)."""
    return next((route for route in routes if route.matches(method, path)), None)


def allowed_for(key: ManagedKey, paid: Mapping[str, str]) -> list[str]:
    """What ``key`` may call, as a 403 names it: its paid endpoints (``paid``: name -> route, the
    app's registered endpoints) and the free routes above."""
    mine = [f"{name} (POST {route})" for name, route in paid.items() if key.allows_endpoint(name)]
    return mine + [route.shown for route in MANAGED_ROUTES]
