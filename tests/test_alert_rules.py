"""The alert rules: promtool validates and unit-tests them, and they speak the proxy's real metrics.

``promtool`` comes with Debian's ``prometheus`` package (``make prometheus-bin``); a missing one
fails these tests loudly. The unit tests themselves live in ``deploy/prometheus/alerts_test.yml``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from proxy.obs.metrics import ProxyMetrics
from tests.prometheus_server import promtool_binary

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "deploy" / "prometheus"
ALERTS = RULES_DIR / "alerts.yml"
ALERTS_TEST = RULES_DIR / "alerts_test.yml"
RUNBOOK = REPO / "docs" / "operations.md"

# Labels a scrape adds to every series, and the bucket bound of histogram series.
SCRAPE_LABELS = frozenset({"job", "instance"})
_SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
_METRIC_NAME = re.compile(r"\bllm_proxy_[a-z_]+\b")


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """promtool with ``args``, its output captured; never raises on a non-zero exit."""
    return subprocess.run([promtool_binary(), *args], capture_output=True, text=True, timeout=60, check=False)


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def unit_tests() -> list[dict[str, Any]]:
    """The ``tests:`` entries of alerts_test.yml."""
    tests: list[dict[str, Any]] = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))["tests"]
    return tests


def exported_series() -> dict[str, frozenset[str]]:
    """Series name → label names of every metric the proxy exports (as a scrape shows them)."""
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    series: dict[str, frozenset[str]] = {"up": frozenset()}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        # prometheus-client keeps the family name and label names only in these attributes.
        name, labels, kind = metric._name, frozenset(metric._labelnames), metric._type
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_count"] = series[f"{name}_sum"] = labels
        else:
            series[name] = labels
    return series


def input_series() -> Iterator[tuple[str, frozenset[str]]]:
    """(metric name, label names) of every input series in alerts_test.yml."""
    for test in unit_tests():
        for item in test["input_series"]:
            match = _SERIES.match(item["series"])
            assert match, item["series"]
            labels = re.findall(r"([a-zA-Z_]\w*)\s*=", match.group(2) or "")
            yield match.group(1), frozenset(labels)


def test_promtool_accepts_the_config_and_its_rule_files() -> None:
    """`promtool check config` loads deploy/prometheus.yml and the alert rules it names."""
    result = run_promtool("check", "config", str(REPO / "deploy" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout
    rules = run_promtool("check", "rules", str(ALERTS))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    """`promtool test rules deploy/prometheus/alerts_test.yml` passes."""
    result = run_promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """Each alert of alerts.yml is expected to fire at some time and to stay quiet at another."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in unit_tests():
        for case in test["alert_rule_test"]:
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert len(names) >= 10
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (fires | quiet) <= names, "tests name an alert that does not exist"


def test_every_alert_has_severity_summary_and_its_runbook_section() -> None:
    """Severity warning|critical, a summary, and a runbook link to its own section of docs/operations.md."""
    headings = {
        line.removeprefix("### ").strip()
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("### ")
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name in headings, f"docs/operations.md has no '### {name}' section"


def test_alerts_and_their_tests_use_the_metrics_the_proxy_exports() -> None:
    """Every llm_proxy_* name in the rules exists, and every test series has exactly its real labels."""
    exported = exported_series()
    used = set(_METRIC_NAME.findall(ALERTS.read_text(encoding="utf-8")))
    assert used - set(exported) == set(), "alerts use metrics the proxy does not export"
    for name, labels in input_series():
        if not (name.startswith("llm_proxy_") or name == "up"):
            continue
        assert name in exported, f"test series of an unknown metric: {name}"
        assert labels - SCRAPE_LABELS == exported[name], f"{name}: labels {sorted(labels)}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_templates_reference_only_labels_the_expression_keeps(rule: dict[str, Any]) -> None:
    """A `{{ $labels.x }}` in an annotation names a label the alert's series carry after aggregation."""
    expr = rule["expr"]
    kept = re.findall(r"\bby\s*\(([^)]*)\)", expr)
    available = {label.strip() for group in kept for label in group.split(",")} or None
    for text in rule["annotations"].values():
        for label in re.findall(r"\$labels\.(\w+)", text):
            if available is None:
                # No aggregation: the raw series' labels (job, instance, ...) are all there.
                assert not re.search(r"\b(sum|min|max|avg|count)\s*\(", expr), (rule["alert"], label)
            else:
                assert label in available, (rule["alert"], label)
