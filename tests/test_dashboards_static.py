"""Static checks of the Grafana dashboard and its provisioning (no Grafana or Prometheus needed).

Pins the metric names the proxy exports, so a renamed metric or a typo in a panel fails here; the
live test then evaluates the same expressions (via ``dashboard_exprs``) against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboard_exprs import endpoint_row, iter_panels, panel_expressions, substitute

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "llm-proxy.json"
DATASOURCE_UID = "prometheus"

COUNTERS = frozenset(
    {
        "llm_proxy_requests_total",
        "llm_proxy_cache_results_total",
        "llm_proxy_prompt_tokens_total",
        "llm_proxy_completion_tokens_total",
        "llm_proxy_images_generated_total",
        "llm_proxy_images_served_from_cache_total",
        "llm_proxy_cost_usd_total",
        "llm_proxy_cost_saved_usd_total",
        "llm_proxy_tokens_saved_total",
        "llm_proxy_bytes_served_total",
        "llm_proxy_upstream_errors_total",
        "llm_proxy_store_errors_total",
        "llm_proxy_coalesced_requests_total",
        "llm_proxy_unknown_model_total",
        "llm_proxy_budget_rejections_total",
        "llm_proxy_key_spend_usd_total",
    }
)
HISTOGRAMS = frozenset(
    {
        "llm_proxy_request_duration_seconds",
        "llm_proxy_upstream_duration_seconds",
        "llm_proxy_upstream_ttfb_seconds",
    }
)
GAUGES = frozenset({"llm_proxy_key_budget_usd", "llm_proxy_key_budget_remaining_usd"})
EXPORTED = COUNTERS | HISTOGRAMS | GAUGES

_METRIC = re.compile(r"llm_proxy_[a-z_]+")
_HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def dashboard() -> dict[str, Any]:
    """The provisioned dashboard, parsed."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def data_panels() -> list[Mapping[str, Any]]:
    """Every panel that queries data (rows only group)."""
    return [p for p in iter_panels(dashboard()) if p["type"] != "row"]


def all_queries() -> list[str]:
    """Raw expressions of every panel target and the query of every template variable."""
    exprs = [str(t["expr"]) for p in data_panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        exprs.append(str(query["query"] if isinstance(query, dict) else query))
    return exprs


def metric_base(name: str) -> str:
    """Strip the series suffix prometheus-client appends to a histogram."""
    base = _HISTOGRAM_SERIES.sub("", name)
    return base if base in HISTOGRAMS else name


def test_dashboard_header() -> None:
    """The dashboard has a stable uid, a title and Grafana 10/11's schema version."""
    data = dashboard()
    assert data["uid"] == "llm-proxy"
    assert data["title"]
    assert data["schemaVersion"] == 39


def test_panel_ids_and_titles_are_unique() -> None:
    """Panel ids are unique, and so are data panel titles (the live test reports by title)."""
    ids = [p["id"] for p in iter_panels(dashboard())]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in data_panels()]
    assert len(titles) == len(set(titles))


def test_panels_fit_the_grid_without_overlap() -> None:
    """Every panel has a gridPos inside the 24-column grid and none covers another."""
    boxes = []
    for panel in iter_panels(dashboard()):
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert pos["x"] >= 0
        assert pos["x"] + pos["w"] <= 24
        boxes.append((panel["title"], pos))
    for index, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[index + 1 :]:
            overlap_x = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            overlap_y = a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
            assert not (overlap_x and overlap_y), (title_a, title_b)


def test_panels_query_the_provisioned_datasource() -> None:
    """Each data panel and each of its targets uses the datasource with uid `prometheus`."""
    panels = data_panels()
    assert len(panels) >= 20
    for panel in panels:
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", {"uid": DATASOURCE_UID})["uid"] == DATASOURCE_UID


def test_model_variable_lists_models() -> None:
    """The `model` template variable reads label values from Prometheus and offers All as `.*`."""
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "model"]
    assert variable["datasource"]["uid"] == DATASOURCE_UID
    assert variable["includeAll"] is True
    assert variable["allValue"] == ".*"
    assert "label_values(" in variable["definition"]


def test_one_row_per_endpoint_repeats_over_the_endpoint_variable() -> None:
    """A row repeated over `$endpoint` shows requests, hit ratio, spend and savings of one endpoint,
    every query filtered by it; the variable lists the endpoint label's values (All = `.*`)."""
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "endpoint"]
    assert variable["includeAll"] is True
    assert variable["allValue"] == ".*"
    assert variable["definition"] == "label_values(llm_proxy_requests_total, endpoint)"
    row, panels = endpoint_row(dashboard())
    assert row["collapsed"] is False
    assert "$endpoint" in row["title"]
    exprs = [str(t["expr"]) for p in panels for t in p["targets"]]
    assert all('endpoint=~"$endpoint"' in expr for expr in exprs), exprs
    shown = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert shown == {
        "llm_proxy_requests_total",
        "llm_proxy_cache_results_total",
        "llm_proxy_cost_usd_total",
        "llm_proxy_cost_saved_usd_total",
    }
    assert any("hit ratio" in p["title"].lower() for p in panels)


def test_only_exported_metrics_are_queried() -> None:
    """Every llm_proxy_* name in a query is one the proxy exports (histograms via their series)."""
    for expr in all_queries():
        for name in _METRIC.findall(expr):
            assert metric_base(name) in EXPORTED, f"unknown metric {name} in {expr}"
            assert name not in HISTOGRAMS, f"bare histogram name {name} has no series"


def test_every_exported_metric_is_shown() -> None:
    """No exported metric is left off the dashboard."""
    used = {metric_base(n) for expr in all_queries() for n in _METRIC.findall(expr)}
    assert used == EXPORTED


def test_hit_ratio_never_divides_by_zero() -> None:
    """Hit ratio queries guard the denominator, so an idle proxy shows no data rather than NaN."""
    panels = [p for p in data_panels() if "hit ratio" in p["title"].lower()]
    ratios = [str(t["expr"]) for p in panels for t in p["targets"]]
    assert ratios
    for expr in ratios:
        assert re.search(r"/\s*\(.*>\s*0\s*\)\s*$", expr), expr


def test_panel_expressions_substitute_every_variable() -> None:
    """The helper yields one balanced, variable-free expression per target."""
    found = panel_expressions(dashboard())
    assert len(found) == sum(len(p["targets"]) for p in data_panels())
    for title, expr in found:
        assert "$" not in expr.replace("$1", ""), title
        assert expr.count("(") == expr.count(")"), title
        assert expr.count("{") == expr.count("}"), title
        assert expr.count("[") == expr.count("]"), title


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("rate(x[$__rate_interval])", "rate(x[1m])"),
        ("increase(x[$__range])", "increase(x[5m])"),
        ('x{model=~"${model}"}', 'x{model=~".*"}'),
        ('x{endpoint=~"$endpoint"}', 'x{endpoint=~".*"}'),
        ("avg_over_time(x[[[__interval]]])", "avg_over_time(x[15s])"),
        ('label_replace(x, "a", "$1", "b", "(.*)")', 'label_replace(x, "a", "$1", "b", "(.*)")'),
    ],
)
def test_substitute_fills_grafana_variables(raw: str, expected: str) -> None:
    """Grafana's $name, ${name} and [[name]] forms are filled; regex back-references stay."""
    assert substitute(raw) == expected


def test_substitute_rejects_unknown_variables() -> None:
    """A variable the live test cannot fill is an error, not a silently broken query."""
    with pytest.raises(KeyError):
        substitute("rate(x[$__rate_interval]) * $scale")


def test_datasource_provisioning() -> None:
    """Grafana provisions Prometheus as the default datasource under the uid the panels use."""
    config = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = config["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True


def test_dashboard_provider_matches_compose_mount() -> None:
    """The file provider reads the folder compose mounts grafana/dashboards into."""
    config = yaml.safe_load((GRAFANA / "provisioning/dashboards/provider.yml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((REPO / "deploy/docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{path}:ro" in mounts
    assert "prometheus" in compose["services"]
