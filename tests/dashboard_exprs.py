"""Pull every PromQL expression out of a Grafana dashboard, ready to send to a real Prometheus.

Shared by the static dashboard test and the live test that evaluates each panel's query, so both
agree on which panels exist and how Grafana's variables are filled in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

# What Grafana would put in place of each variable the dashboards may use. `$model` and
# `$endpoint` are multi-value variables whose "All" is the regex `.*` (a repeated row gets one
# endpoint name each: ``endpoint_row`` below fills that in).
SUBSTITUTIONS: Mapping[str, str] = MappingProxyType(
    {
        "__range": "5m",
        "__rate_interval": "1m",
        "__interval": "15s",
        "model": ".*",
        "endpoint": ".*",
    }
)

# `$name`, `${name}` and the legacy `[[name]]`. Names start with a letter or underscore, so a
# regex back-reference such as label_replace's "$1" is left alone.
_NAME = r"([A-Za-z_]\w*)"
_VARIABLE = re.compile(rf"\$\{{{_NAME}\}}|\[\[{_NAME}\]\]|\${_NAME}")


def substitute(expr: str, values: Mapping[str, str] = SUBSTITUTIONS) -> str:
    """Replace Grafana variables in ``expr``; an unknown variable raises ``KeyError``."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"dashboard uses an unexpected variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(fill, expr)


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, rows included, descending into collapsed rows' nested panels."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_expressions(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr with variables substituted) for every Prometheus target."""
    found: list[tuple[str, str]] = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                found.append((str(panel.get("title", "")), substitute(str(expr))))
    return found


def endpoint_row(dashboard: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]]:
    """The row repeated over ``$endpoint`` and the panels it repeats (those below it, up to the
    next row), as Grafana lays out a non-collapsed repeated row."""
    panels = list(dashboard.get("panels", []))
    start = next(i for i, panel in enumerate(panels) if panel.get("repeat") == "endpoint")
    below: list[Mapping[str, Any]] = []
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        below.append(panel)
    return panels[start], below


def endpoint_expressions(dashboard: Mapping[str, Any], endpoint: str) -> list[tuple[str, str]]:
    """(panel title, expr) of the repeated endpoint row as Grafana fills it in for ``endpoint``."""
    _, panels = endpoint_row(dashboard)
    values = {**SUBSTITUTIONS, "endpoint": endpoint}
    return [
        (substitute(str(panel["title"]), values), substitute(str(target["expr"]), values))
        for panel in panels
        for target in panel.get("targets", [])
    ]
