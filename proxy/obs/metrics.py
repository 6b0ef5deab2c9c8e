"""Every Prometheus metric of the proxy, on a registry the caller passes in.

Names are a contract with the Grafana dashboards: change them only together.
Labels are bounded here (model, key alias, cache result, status class, endpoint) so a
misbehaving client can neither blow up the TSDB nor leak a secret into a label. ``endpoint`` is
one of the names the app registered (``Endpoint.name``, "models") or ``other``: the series names
stayed as they were, so every ``sum`` over them still adds all endpoints up.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Collection
from math import isnan
from typing import Any, Self

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.values import MutexValue

from proxy.keys.settings import hash_secret
from proxy.obs.pricing import micro_to_usd
from proxy.util.memo import remember

# 0.5 ms (memory hit) up to 300 s (slow image generation, the default upstream timeout).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

# "bypass": the store failed or was too slow (alerts watch it); "skipped": the request was not
# looked up on purpose (not cacheable, or the client's no-cache), a choice, not a fault.
SKIPPED = "skipped"
CACHE_RESULTS = frozenset({"hit", "miss", "bypass", SKIPPED, "coalesced", "none"})
_CACHE_LABELS = {spelling: value for value in CACHE_RESULTS for spelling in (value, value.upper())}
_STATUS_CLASSES = ("", "1xx", "2xx", "3xx", "4xx", "5xx")
UPSTREAM_ERROR_KINDS = frozenset(
    {"status_4xx", "status_5xx", "timeout", "connect", "stream_cut", "invalid_response"}
)
OTHER = "other"
# Model labels that never depend on a request: no model at all, an empty one, the overflow bucket.
FIXED_MODEL_LABELS = frozenset({"none", "unknown", OTHER})
ANONYMOUS = "anonymous"
MAX_LABEL_CHARS = 64

_DISALLOWED = re.compile(r"[^A-Za-z0-9._:/-]")
# Shapes of bearer tokens: "sk-..."-style prefixes, or a long opaque run with letters and digits.
_SECRET_PREFIX = re.compile(r"^(sk|pk|rk|bearer)[-_ ]", re.IGNORECASE)
_OPAQUE = re.compile(r"^[A-Za-z0-9_\-+/=.]{32,}$")


# Children remembered per metric (label values are bounded by the label rules below; this bounds
# the memo itself whatever a caller passes).
_MAX_CHILDREN = 4096
# Model names and key aliases whose label is remembered (both are client-controlled).
_MAX_REMEMBERED_LABELS = 4096


class _LoopValue(MutexValue):
    """prometheus-client's in-process value without its lock: every metric of the proxy is
    written and read (``/metrics``) on the event loop's one thread, so the lock guarded nothing,
    and taking it on each of the ~8 increments of a text hit cost ~0.2 us apiece (measured).
    Multiprocess mode keeps prometheus-client's own mmap-backed values (``_unlock`` leaves any
    other class alone)."""

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def get(self) -> float:
        return self._value


def _unlock(value: object) -> None:
    if type(value) is MutexValue:
        value.__class__ = _LoopValue


class _CachedChildren(MetricWrapperBase):
    """``labels(...)`` remembered per tuple of label values, whatever the metric's label names.

    prometheus-client's ``labels`` checks the count, converts every value and takes a lock on each
    call: 6 % of a text hit (``bench/profiles/``), which sets five or six children. Here a known
    tuple is one dict lookup. The children never change (nothing here removes one); the memo is
    cleared when full (a later call just asks prometheus-client again).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[object, ...], Self] = {}

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Self:
        """The child for these label values (keyword values: prometheus-client's own, unremembered)."""
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)
        try:
            return self._children[labelvalues]
        except KeyError:
            pass
        return remember(self._children, labelvalues, super().labels(*labelvalues), _MAX_CHILDREN)

    def _metric_init(self) -> None:
        """The child's values, lock-free in single-process mode (``_LoopValue``)."""
        super()._metric_init()  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated
        for name in ("_value", "_sum", "_count"):
            _unlock(getattr(self, name, None))
        for bucket in getattr(self, "_buckets", ()):
            _unlock(bucket)


class _Counter(_CachedChildren, Counter):
    """A ``Counter`` with remembered children and a shorter ``inc`` for them."""

    _fast: _LoopValue | None = None  # a child's own value, when it is lock-free

    def _metric_init(self) -> None:
        super()._metric_init()
        self._fast = self._value if type(self._value) is _LoopValue else None

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        """prometheus-client's ``inc``, minus its observability check and its value's method call
        on the path every request takes (a child, no exemplar): ~0.5 us of the six increments of a
        text hit (``bench/profiles/``). Anything else goes the library's way (and its errors)."""
        fast = self._fast
        if fast is not None and exemplar is None and amount >= 0:
            fast._value += amount
            return
        super().inc(amount, exemplar)


class _Histogram(_CachedChildren, Histogram):
    """A ``Histogram`` with remembered children and a shorter ``observe`` for them."""

    _fast: tuple[_LoopValue, list[_LoopValue]] | None = None

    def _metric_init(self) -> None:
        super()._metric_init()
        values = [self._sum, *self._buckets]
        if all(type(value) is _LoopValue for value in values):
            self._fast = (self._sum, self._buckets)

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """prometheus-client's ``observe`` with a binary search for the bucket (its own walks the
        bounds in Python), same result: the first bucket whose bound is >= ``amount``."""
        fast = self._fast
        if fast is None or exemplar is not None or isnan(amount):  # the library's way
            super().observe(amount, exemplar)
            return
        total, buckets = fast
        total._value += amount
        buckets[bisect_left(self._upper_bounds, amount)]._value += 1


class _Gauge(_CachedChildren, Gauge):
    """A ``Gauge`` with remembered children."""


def _sanitize(value: str) -> str:
    return _DISALLOWED.sub("_", value.strip())[:MAX_LABEL_CHARS]


def _looks_secret(value: str) -> bool:
    if _SECRET_PREFIX.match(value):
        return True
    return bool(_OPAQUE.match(value) and any(c.isdigit() for c in value) and any(c.isalpha() for c in value))


class _BoundedLabels:
    """First ``limit`` distinct values admitted pass through, later ones collapse into ``other``."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def admit(self, value: str) -> bool:
        """Give ``value`` a label of its own while the budget lasts; whether it is new."""
        if value != OTHER and value not in self._seen and len(self._seen) < self._limit:
            self._seen.add(value)
            return True
        return False

    def __contains__(self, value: str) -> bool:
        return value in self._seen

    def __call__(self, value: str) -> str:
        if value == OTHER or value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class ProxyMetrics:
    """Typed handles on all proxy metrics plus one-line helpers for the request path."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_model_labels: int = 64,
        max_key_labels: int = 256,
        priced: Callable[[str], bool] = lambda _name: False,
        endpoints: Collection[str] = (),
    ) -> None:
        self._models = _BoundedLabels(max_model_labels)
        # The endpoint names the app serves (fixed at start): the only values of `endpoint`.
        self._endpoints = frozenset(endpoints)
        self._keys = _BoundedLabels(max_key_labels)
        # model_label, accept_model and key_label per raw value: they run several times on every
        # request and each costs a regex or two. A model's label changes only when the price table
        # is replaced (``forget_models``) or a model is admitted; a key's never changes.
        self._model_labels: dict[str, str] = {}
        self._accepted: set[str] = set()
        self._key_labels: dict[str, str] = {}
        # The children a request, a cache result and a hit's savings add to, per raw label values:
        # label rules, a tuple and up to three labels() calls per metric call were ~5 % of a text
        # hit. They follow the model labels: cleared with them (``_forget_model_labels``).
        self._request_children: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._result_children: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._saved_children: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.priced = priced

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return _Counter(f"llm_proxy_{name}", doc, labels, registry=registry)

        def histogram(name: str, doc: str, *labels: str) -> Histogram:
            return _Histogram(f"llm_proxy_{name}", doc, labels, buckets=LATENCY_BUCKETS, registry=registry)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            # "mostrecent" reports the value the last writing worker set: right for a budget
            # shared in Redis, where summing across workers would multiply it by N.
            return _Gauge(f"llm_proxy_{name}", doc, labels, registry=registry, multiprocess_mode="mostrecent")

        self.requests = counter(
            "requests_total", "Client requests.", "route", "model", "status_class", "cache", "endpoint"
        )
        self.cache_results = counter("cache_results_total", "Cache lookups.", "model", "result", "endpoint")
        self.prompt_tokens = counter(
            "prompt_tokens_total", "Prompt tokens billed.", "model", "key", "endpoint"
        )
        self.completion_tokens = counter(
            "completion_tokens_total", "Completion tokens billed.", "model", "key", "endpoint"
        )
        self.images_generated = counter("images_generated_total", "Images generated upstream.", "model")
        self.images_served_from_cache = counter(
            "images_served_from_cache_total", "Images served from the cache.", "model"
        )
        self.cost_usd = counter(
            "cost_usd_total", "USD spent upstream (list prices).", "model", "key", "endpoint"
        )
        self.cost_saved_usd = counter(
            "cost_saved_usd_total", "USD not spent thanks to the cache.", "model", "key", "endpoint"
        )
        self.tokens_saved = counter(
            "tokens_saved_total", "Prompt + completion tokens served from cache.", "model", "key", "endpoint"
        )
        self.bytes_served = counter("bytes_served_total", "Response bytes sent.", "cache")
        self.request_duration = histogram(
            "request_duration_seconds", "Request to last byte sent.", "route", "cache"
        )
        self.upstream_duration = histogram(
            "upstream_duration_seconds", "Upstream call to last byte.", "model"
        )
        self.upstream_ttfb = histogram("upstream_ttfb_seconds", "Upstream time to first byte.", "model")
        self.upstream_errors = counter("upstream_errors_total", "Upstream failures.", "kind")
        self.store_errors = counter("store_errors_total", "Cache/budget store failures.", "op")
        self.coalesced_requests = counter(
            "coalesced_requests_total", "Requests answered by another in-flight call.", "model"
        )
        self.unknown_model = counter(
            "unknown_model_total", "Requests for models without a price (cost 0).", "model"
        )
        self.budget_rejections = counter(
            "budget_rejections_total", "Requests refused over a key budget.", "key"
        )
        self.key_spend_usd = counter("key_spend_usd_total", "USD spent per key.", "key")
        self.key_budget_usd = gauge("key_budget_usd", "Key budget for its current period.", "key")
        self.key_budget_remaining_usd = gauge(
            "key_budget_remaining_usd", "Key budget left in its current period.", "key"
        )
        self.degraded = _Gauge(
            "llm_proxy_degraded",
            "1 while a component of this replica is degraded (it still serves; see /readyz).",
            ["component"],
            registry=registry,
            multiprocess_mode="max",
        )

    @property
    def priced(self) -> Callable[[str], bool]:
        """Whether the live price table names a model (the app sets ``Accountant.priced``)."""
        return self._priced

    @priced.setter
    def priced(self, priced: Callable[[str], bool]) -> None:
        self._priced = priced
        self.forget_models()

    def forget_models(self) -> None:
        """The price table was replaced: model labels are worked out again."""
        self._forget_model_labels()
        self._accepted.clear()

    def _forget_model_labels(self) -> None:
        self._model_labels.clear()
        self._request_children.clear()
        self._result_children.clear()
        self._saved_children.clear()

    def model_label(self, model: str) -> str:
        """Model name safe as a label: charset-restricted, <= 64 chars, bounded cardinality.

        Only models in the price table (under the table's own name, so case variants are one
        label) or models the upstream answered with a 2xx (``accept_model``, first
        ``max_model_labels`` of them) get a label of their own; anything else is ``other``, so
        junk names from refused or unauthenticated requests can never use up the budget.
        """
        label = self._model_labels.get(model)
        if label is None:
            label = self._model_label(model)
            remember(self._model_labels, model, label, _MAX_REMEMBERED_LABELS)
        return label

    def _model_label(self, model: str) -> str:
        name = model.strip().lower()
        if self.priced(name):
            return _sanitize(name)
        label = _sanitize(model) or "unknown"
        if label in FIXED_MODEL_LABELS or label in self._models:
            return label
        return OTHER

    def accept_model(self, model: str) -> None:
        """The upstream answered ``model`` with a 2xx (or a hit proves it did): it may have a label."""
        if model in self._accepted:
            return
        if not self.priced(model.strip().lower()) and self._models.admit(_sanitize(model) or "unknown"):
            self._forget_model_labels()  # a model that was "other" has a label of its own now
        if len(self._accepted) >= _MAX_REMEMBERED_LABELS:
            self._accepted.clear()
        self._accepted.add(model)

    def key_label(self, alias: str | None) -> str:
        """Key alias safe as a label; a value that looks like a secret is replaced by a hash tag."""
        if not alias:
            return ANONYMOUS
        label = self._key_labels.get(alias)
        if label is None:
            # Stable once given: _BoundedLabels never forgets a value, and "other" stays "other".
            label = self._key_label(alias)
            remember(self._key_labels, alias, label, _MAX_REMEMBERED_LABELS)
        return label

    def _key_label(self, alias: str) -> str:
        if not alias.strip():
            return ANONYMOUS
        if _looks_secret(alias.strip()):
            # Callers should pass aliases; this is the safety net if one passes a bearer.
            digest = hash_secret(alias.strip())[:12]
            return self._keys(f"hash:{digest}")
        return self._keys(_sanitize(alias))

    def endpoint_label(self, name: str) -> str:
        """An endpoint the app registered keeps its name; anything else is ``other``."""
        return name if name in self._endpoints else OTHER

    @staticmethod
    def status_class(status: int) -> str:
        """HTTP status as "2xx", "4xx", ...; anything outside 100..599 is "other"."""
        return _STATUS_CLASSES[status // 100] if 100 <= status <= 599 else OTHER

    @staticmethod
    def cache_label(cache: str) -> str:
        """Cache outcome as one of hit|miss|bypass|skipped|coalesced|none."""
        known = _CACHE_LABELS.get(cache)  # the flow's own spellings: no string work per request
        if known is not None:
            return known
        value = cache.strip().lower()
        return value if value in CACHE_RESULTS else "none"

    def observe_request(  # noqa: PLR0917 -- mirrors the label order of requests_total
        self,
        route: str,
        model: str,
        status: int,
        cache: str,
        duration_s: float,
        bytes_served: int = 0,
        *,
        endpoint: str = OTHER,
    ) -> None:
        """Count one finished client request with its latency and body size."""
        key = (route, model, status, cache, endpoint)
        children = self._request_children.get(key)
        if children is None:
            cache_l = self.cache_label(cache)
            model_l, endpoint_l = self.model_label(model), self.endpoint_label(endpoint)
            children = (
                self.requests.labels(route, model_l, self.status_class(status), cache_l, endpoint_l),
                self.request_duration.labels(route, cache_l),
                self.bytes_served.labels(cache_l),
            )
            remember(self._request_children, key, children, _MAX_CHILDREN)
        requests, duration, served = children
        requests.inc()
        duration.observe(duration_s if duration_s > 0.0 else 0.0)
        if bytes_served > 0:
            served.inc(bytes_served)

    def record_cache_result(self, model: str, result: str, *, endpoint: str) -> None:
        """Count one cache lookup outcome (coalesced ones also in the coalesced counter)."""
        key = (model, result, endpoint)
        children = self._result_children.get(key)
        if children is None:
            result_l = self.cache_label(result)
            model_l = self.model_label(model)
            children = (
                self.cache_results.labels(model_l, result_l, self.endpoint_label(endpoint)),
                self.coalesced_requests.labels(model_l) if result_l == "coalesced" else None,
            )
            remember(self._result_children, key, children, _MAX_CHILDREN)
        results, coalesced = children
        results.inc()
        if coalesced is not None:
            coalesced.inc()

    def record_usage(  # noqa: PLR0917 -- positional order is the documented call-site contract
        self,
        model: str,
        key: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost_micro_usd: int,
        images: int,
        *,
        endpoint: str,
    ) -> None:
        """Account what an upstream call consumed; ``key`` is the alias, never the secret."""
        model_l, key_l, endpoint_l = (
            self.model_label(model),
            self.key_label(key),
            self.endpoint_label(endpoint),
        )
        self.prompt_tokens.labels(model_l, key_l, endpoint_l).inc(max(prompt_tokens, 0))
        self.completion_tokens.labels(model_l, key_l, endpoint_l).inc(max(completion_tokens, 0))
        usd = micro_to_usd(max(cost_micro_usd, 0))
        self.cost_usd.labels(model_l, key_l, endpoint_l).inc(usd)
        self.key_spend_usd.labels(key_l).inc(usd)
        self.images_generated.labels(model_l).inc(max(images, 0))

    def record_saved(  # noqa: PLR0917 -- same order as record_usage
        self,
        model: str,
        key: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost_micro_usd: int,
        images: int,
        *,
        endpoint: str,
    ) -> None:
        """Account what a cache hit would have cost had it gone upstream."""
        children = self._saved_children.get((model, key, endpoint))
        if children is None:
            model_l, key_l = self.model_label(model), self.key_label(key)
            endpoint_l = self.endpoint_label(endpoint)
            # Every series is created (labels), but adding 0 is skipped.
            children = (
                self.tokens_saved.labels(model_l, key_l, endpoint_l),
                self.cost_saved_usd.labels(model_l, key_l, endpoint_l),
                self.images_served_from_cache.labels(model_l),
            )
            remember(self._saved_children, (model, key, endpoint), children, _MAX_CHILDREN)
        tokens, cost, served = children
        if (saved_tokens := max(prompt_tokens, 0) + max(completion_tokens, 0)) > 0:
            tokens.inc(saved_tokens)
        if cost_micro_usd > 0:
            cost.inc(micro_to_usd(cost_micro_usd))
        if images > 0:
            served.inc(images)

    def set_key_budget(self, key: str | None, budget_micro_usd: int, remaining_micro_usd: int) -> None:
        """Publish a key's budget and what is left of it (remaining floored at 0)."""
        key_l = self.key_label(key)
        self.key_budget_usd.labels(key_l).set(micro_to_usd(budget_micro_usd))
        self.key_budget_remaining_usd.labels(key_l).set(micro_to_usd(max(remaining_micro_usd, 0)))

    def set_degraded(self, component: str, degraded: bool) -> None:
        """Mirror ``obs.health.Health``: 1 while ``component`` is degraded, else 0."""
        self.degraded.labels(component).set(1 if degraded else 0)

    def record_upstream_error(self, kind: str) -> None:
        """Count an upstream failure; unknown kinds are counted as "other"."""
        self.upstream_errors.labels(kind if kind in UPSTREAM_ERROR_KINDS else OTHER).inc()


def render_latest(registry: CollectorRegistry, multiprocess_dir: str | None = None) -> tuple[bytes, str]:
    """Body and content type for ``/metrics``; aggregates all workers when a dir is given.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, read by the caller) each worker writes
    its values to files there, so a fresh registry reading those files sees every worker.
    """
    if multiprocess_dir:
        aggregate = CollectorRegistry()
        MultiProcessCollector(aggregate, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(aggregate), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST
