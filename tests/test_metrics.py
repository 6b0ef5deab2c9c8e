"""Metrics: exact names for the dashboards, bounded labels, multi-worker aggregation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.obs import metrics as metrics_module
from proxy.obs.metrics import ProxyMetrics, render_latest

REPO_ROOT = Path(__file__).resolve().parents[1]

METRIC_NAMES = [
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
    "llm_proxy_request_duration_seconds",
    "llm_proxy_upstream_duration_seconds",
    "llm_proxy_upstream_ttfb_seconds",
    "llm_proxy_upstream_errors_total",
    "llm_proxy_store_errors_total",
    "llm_proxy_coalesced_requests_total",
    "llm_proxy_unknown_model_total",
    "llm_proxy_budget_rejections_total",
    "llm_proxy_key_spend_usd_total",
    "llm_proxy_key_budget_usd",
    "llm_proxy_key_budget_remaining_usd",
]


def _exercise(metrics: ProxyMetrics) -> None:
    metrics.accept_model("gpt-4o")  # the upstream answered it: it has a label of its own
    metrics.observe_request(
        "/v1/chat/completions", "gpt-4o", 200, "MISS", 0.3, 1234, endpoint="chat.completions"
    )
    metrics.record_cache_result("gpt-4o", "coalesced", endpoint="chat.completions")
    metrics.record_usage("gpt-4o", "team-a", 100, 50, 750, 1, endpoint="chat.completions")
    metrics.record_saved("gpt-4o", "team-a", 100, 50, 750, 1, endpoint="chat.completions")
    metrics.upstream_duration.labels("gpt-4o").observe(1.5)
    metrics.upstream_ttfb.labels("gpt-4o").observe(0.2)
    metrics.record_upstream_error("timeout")
    metrics.store_errors.labels("get").inc()
    metrics.unknown_model.labels(metrics.model_label("mystery")).inc()
    metrics.budget_rejections.labels(metrics.key_label("team-a")).inc()
    metrics.set_key_budget("team-a", 5_000_000, 4_999_250)


def _samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_every_metric_name_is_exported() -> None:
    """All dashboard metric names appear in /metrics, declared and with samples once used."""
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    body, content_type = render_latest(registry)
    assert content_type.startswith("text/plain")
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in body.decode(), name
    _exercise(metrics)
    body, _ = render_latest(registry)
    sample_names = {name for name, _ in _samples(body)}
    for name in METRIC_NAMES:
        expected = f"{name}_count" if name.endswith("_seconds") else name
        assert expected in sample_names, name


def test_usage_and_savings_values() -> None:
    """record_usage/record_saved convert micro-USD to USD and count tokens and images."""
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry, endpoints={"chat.completions"})
    _exercise(metrics)
    samples = _samples(render_latest(registry)[0])
    mk = frozenset({("model", "gpt-4o"), ("key", "team-a"), ("endpoint", "chat.completions")})
    assert samples["llm_proxy_cost_usd_total", mk] == pytest.approx(0.00075)
    assert samples["llm_proxy_prompt_tokens_total", mk] == 100
    assert samples["llm_proxy_tokens_saved_total", mk] == 150
    assert samples["llm_proxy_key_spend_usd_total", frozenset({("key", "team-a")})] == 0.00075
    assert samples["llm_proxy_key_budget_usd", frozenset({("key", "team-a")})] == 5.0
    request_labels = frozenset(
        {
            ("route", "/v1/chat/completions"),
            ("model", "gpt-4o"),
            ("status_class", "2xx"),
            ("cache", "miss"),
            ("endpoint", "chat.completions"),
        }
    )
    assert samples["llm_proxy_requests_total", request_labels] == 1
    assert samples["llm_proxy_bytes_served_total", frozenset({("cache", "miss")})] == 1234
    assert samples["llm_proxy_coalesced_requests_total", frozenset({("model", "gpt-4o")})] == 1


def test_model_labels_are_bounded() -> None:
    """After max_model_labels accepted models, new ones become "other"; accepted ones stay."""
    metrics = ProxyMetrics(CollectorRegistry(), max_model_labels=64)
    for i in range(65):
        metrics.accept_model(f"model-{i}")
    for i in range(64):
        assert metrics.model_label(f"model-{i}") == f"model-{i}"
    assert metrics.model_label("model-64") == "other"
    assert metrics.model_label("model-3") == "model-3"
    assert metrics.model_label("other") == "other"


def test_unaccepted_models_are_other_and_use_no_budget() -> None:
    """A model neither priced nor answered by the upstream is "other" and takes no label slot."""
    metrics = ProxyMetrics(CollectorRegistry(), max_model_labels=2)
    assert [metrics.model_label(f"junk-{i}") for i in range(100)] == ["other"] * 100
    metrics.accept_model("real-model")
    assert metrics.model_label("real-model") == "real-model"
    assert (metrics.model_label("none"), metrics.model_label("")) == ("none", "unknown")


def test_priced_models_are_labelled_by_their_table_name() -> None:
    """Price-table models get a label without the budget, one per table name whatever the case."""
    metrics = ProxyMetrics(CollectorRegistry(), max_model_labels=0, priced=lambda name: name == "gpt-4o")
    assert {metrics.model_label(name) for name in ("gpt-4o", "GPT-4o", " gpt-4O ")} == {"gpt-4o"}
    assert metrics.model_label("gpt-4o-junk") == "other"


def test_label_state_is_per_instance() -> None:
    """Two ProxyMetrics instances do not share label budgets."""
    first = ProxyMetrics(CollectorRegistry(), max_model_labels=1)
    second = ProxyMetrics(CollectorRegistry(), max_model_labels=1)
    first.accept_model("a")
    second.accept_model("b")
    first.accept_model("b")
    assert first.model_label("a") == "a"
    assert second.model_label("b") == "b"
    assert first.model_label("b") == "other"


def test_model_label_charset_and_length() -> None:
    """Model labels keep [A-Za-z0-9._:/-], replace the rest and are cut to 64 chars."""
    metrics = ProxyMetrics(CollectorRegistry())
    names = ("google/gemini-2.5-flash-image-preview", 'evil"}\nmodel{x="1', "m" * 200)
    for name in names:
        metrics.accept_model(name)
    assert [metrics.model_label(name) for name in names] == [
        "google/gemini-2.5-flash-image-preview",
        "evil___model_x__1",
        "m" * 64,
    ]
    assert metrics.model_label("") == "unknown"


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
        "sk-1234",
        "Bearer sk-abc",
        "AIzaSyD3xampleG00gleKey1234567890abcdef",
        "c2VjcmV0LXRva2VuLXRoYXQtaXMtbG9uZw0123456789==",
    ],
)
def test_secret_looking_keys_never_become_labels(secret: str) -> None:
    """A bearer passed by mistake is replaced by a short hash tag, never exported."""
    metrics = ProxyMetrics(CollectorRegistry())
    label = metrics.key_label(secret)
    assert label.startswith("hash:")
    assert secret not in label
    assert label == metrics.key_label(secret)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("team-analytics", "team-analytics"),
        ("billing service", "billing_service"),
        ("team-analytics-production-service", "team-analytics-production-service"),
        (None, "anonymous"),
        ("  ", "anonymous"),
    ],
)
def test_key_aliases_pass_through(alias: str | None, expected: str) -> None:
    """Ordinary aliases are kept (sanitised); a missing alias is "anonymous"."""
    assert ProxyMetrics(CollectorRegistry()).key_label(alias) == expected


def test_endpoint_label_is_a_registered_name_or_other() -> None:
    """`endpoint` is one of the names the app registered; a name nothing registered is `other`."""
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry, endpoints={"embeddings", "models"})
    for name in ("embeddings", "models", "/v1/files", "x" * 500):
        metrics.record_cache_result("gpt-4o", "hit", endpoint=name)
        metrics.record_saved("gpt-4o", "team-a", 1, 1, 1, 0, endpoint=name)
    samples = _samples(render_latest(registry)[0])
    for family in ("llm_proxy_cache_results_total", "llm_proxy_cost_saved_usd_total"):
        per_endpoint: dict[str, float] = {}
        for (name, labels), value in samples.items():
            if name == family:
                endpoint = dict(labels)["endpoint"]
                per_endpoint[endpoint] = per_endpoint.get(endpoint, 0) + value
        assert set(per_endpoint) == {"embeddings", "models", "other"}, family
    assert (
        sum(
            value
            for (name, labels), value in samples.items()
            if name == "llm_proxy_cache_results_total" and ("endpoint", "other") in labels
        )
        == 2
    )


def test_secret_never_reaches_rendered_metrics() -> None:
    """Even if a caller passes a bearer as the key, /metrics does not contain it."""
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    secret = "sk-live-0123456789abcdefghijklmnopqrstuv"
    metrics.record_usage("gpt-4o", secret, 1, 1, 1, 0, endpoint="chat.completions")
    metrics.set_key_budget(secret, 1, 1)
    assert secret.encode() not in render_latest(registry)[0]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "2xx"), (204, "2xx"), (304, "3xx"), (429, "4xx"), (599, "5xx"), (0, "other")],
)
def test_status_class(status: int, expected: str) -> None:
    """HTTP statuses collapse to their class; out-of-range values are "other"."""
    assert ProxyMetrics.status_class(status) == expected


@pytest.mark.parametrize(
    ("cache", "expected"),
    [("HIT", "hit"), ("miss", "miss"), ("Bypass", "bypass"), ("COALESCED", "coalesced"),
     ("weird", "none")],
)  # fmt: skip
def test_cache_label(cache: str, expected: str) -> None:
    """X-Cache values map to the bounded cache label set."""
    assert ProxyMetrics.cache_label(cache) == expected


def test_unknown_upstream_error_kind_is_other() -> None:
    """Upstream error kinds outside the documented set are counted as "other"."""
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    metrics.record_upstream_error("gremlins")
    samples = _samples(render_latest(registry)[0])
    assert samples["llm_proxy_upstream_errors_total", frozenset({("kind", "other")})] == 1


CHILD = """
from prometheus_client import CollectorRegistry, generate_latest
from proxy.obs.metrics import ProxyMetrics
m = ProxyMetrics(CollectorRegistry())
m.accept_model("gpt-4o")
m.observe_request("/v1/chat/completions", "gpt-4o", 200, "hit", 0.01, 10)
m.set_key_budget("team-a", 5_000_000, {remaining})
"""


def test_multiprocess_rendering_aggregates_workers(tmp_path: Path) -> None:
    """Two worker processes each count one request; the aggregated /metrics shows 2."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    for remaining in (4_000_000, 3_000_000):
        subprocess.run(
            [sys.executable, "-c", CHILD.format(remaining=remaining)],
            env=env,
            cwd=REPO_ROOT,
            check=True,
            timeout=60,
        )
    assert len(list(tmp_path.glob("*.db"))) >= 2

    body, _ = render_latest(CollectorRegistry(), multiprocess_dir=str(tmp_path))
    samples = _samples(body)
    labels = frozenset(
        {
            ("route", "/v1/chat/completions"),
            ("model", "gpt-4o"),
            ("status_class", "2xx"),
            ("cache", "hit"),
            ("endpoint", "other"),  # the child's metrics were built without endpoint names
        }
    )
    assert samples["llm_proxy_requests_total", labels] == 2
    assert samples["llm_proxy_bytes_served_total", frozenset({("cache", "hit")})] == 20
    # mostrecent: the budget is shared, so it is reported once (last write), not summed.
    key = frozenset({("key", "team-a")})
    assert samples["llm_proxy_key_budget_usd", key] == 5.0
    assert samples["llm_proxy_key_budget_remaining_usd", key] == 3.0


def test_in_process_values_are_exact_without_the_lock() -> None:
    """Single-process metrics drop prometheus-client's per-value lock (everything runs on the event
    loop's thread): counters, histogram buckets/sums and gauges still add up exactly, and a
    value set later wins."""
    registry = CollectorRegistry()
    m = ProxyMetrics(registry, endpoints={"chat"})
    for _ in range(1000):
        m.observe_request("/v1/chat/completions", "none", 200, "hit", 0.002, 7, endpoint="chat")
    m.set_key_budget("team-a", 5_000_000, 4_000_000)
    m.set_key_budget("team-a", 5_000_000, 3_000_000)
    samples = _samples(generate_latest(registry))
    hit = frozenset({("cache", "hit")})
    assert samples["llm_proxy_bytes_served_total", hit] == 7000
    route = frozenset({("route", "/v1/chat/completions"), ("cache", "hit")})
    assert samples["llm_proxy_request_duration_seconds_count", route] == 1000
    assert samples["llm_proxy_request_duration_seconds_sum", route] == pytest.approx(2.0)
    assert samples["llm_proxy_request_duration_seconds_bucket", route | {("le", "0.001")}] == 0
    assert samples["llm_proxy_request_duration_seconds_bucket", route | {("le", "0.0025")}] == 1000
    assert samples["llm_proxy_key_budget_remaining_usd", frozenset({("key", "team-a")})] == 3.0


@given(
    amounts=st.lists(
        st.one_of(
            st.floats(min_value=-1.0, max_value=1e6, allow_nan=False),
            st.sampled_from([0.0, 0.005, 0.01, 0.25, 1.0, 2.5, 10.0, float("inf")]),
        ),
        max_size=40,
    )
)
def test_short_inc_and_observe_expose_what_prometheus_client_does(amounts: list[float]) -> None:
    """The proxy's ``inc``/``observe`` shortcuts (``obs.metrics._Counter``/``_Histogram``: no
    observability check, a binary search for the bucket) expose exactly what prometheus-client's
    own classes expose for the same values, bucket boundaries and negative amounts included."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buckets = (0.005, 0.01, 0.25, 1.0, 2.5, 10.0)
    histograms = [
        cls("lat_seconds", "latency", ["route"], registry=reg, buckets=buckets)
        for cls, reg in ((metrics_module._Histogram, ours), (Histogram, theirs))
    ]
    counters = [
        cls("calls_total", "calls", ["route"], registry=reg)
        for cls, reg in ((metrics_module._Counter, ours), (Counter, theirs))
    ]
    for amount in amounts:
        for histogram in histograms:
            histogram.labels("/v1/x").observe(amount)
        for counter in counters:
            if amount >= 0:
                counter.labels("/v1/x").inc(amount)
            else:
                with pytest.raises(ValueError, match="non-negative"):
                    counter.labels("/v1/x").inc(amount)

    def exposed(registry: CollectorRegistry) -> list[bytes]:
        return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]

    assert exposed(ours) == exposed(theirs)
