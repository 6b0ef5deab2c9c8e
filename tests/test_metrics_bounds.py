"""What clients can put into metrics and logs: model labels only for models the price table or the
upstream vouches for, ``/metrics`` behind an optional token, client strings clipped in logs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from proxy.config import Secret
from tests.e2e_helpers import TEXT_MODEL, chat_body, chat_raw, send_raw
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, proxy_settings

GOOD_KEY = "sk-upstream-accepts-this-one"
METRICS_TOKEN = "metrics-token-for-the-tests-0123456789"


@pytest.fixture
async def proxy(fake_upstream: FakeUpstream, redis_url: str, key_prefix: str) -> AsyncIterator[ProxyServer]:
    """A pass-through proxy whose upstream accepts only ``GOOD_KEY``."""
    fake_upstream.state.valid_keys = {GOOD_KEY}
    async with ProxyServer(proxy_settings(fake_upstream.url, redis_url, key_prefix)) as server:
        yield server


def model_labels(metrics: str) -> set[str]:
    """Every ``model`` label value of ``llm_proxy_requests_total``."""
    labels = set()
    for line in metrics.splitlines():
        if line.startswith("llm_proxy_requests_total{"):
            labels.add(line.split('model="', 1)[1].split('"', 1)[0])
    return labels


async def test_junk_model_names_never_use_up_the_label_budget(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """100 refused requests with distinct junk models all count as "other"; a model the upstream
    then answers, and a priced one, still get labels of their own."""
    for index in range(100):
        reply = await chat_raw(proxy, chat_body("hi", model=f"junk-{index}"), api_key="sk-not-accepted")
        assert reply.status == 401
    for model in ("sim-text-1", TEXT_MODEL):  # unpriced but answered; priced
        reply = await chat_raw(proxy, chat_body("hi", model=model), api_key=GOOD_KEY)
        assert reply.status == 200
    metrics = (await send_raw(f"{proxy.base}/metrics", None, method="GET")).body.decode()
    labels = model_labels(metrics)
    assert {"sim-text-1", TEXT_MODEL, "other"} <= labels
    assert not [label for label in labels if label.startswith("junk")]
    assert fake_upstream.chat_calls == 102


@pytest.fixture
async def token_proxy(fake_upstream: FakeUpstream) -> AsyncIterator[ProxyServer]:
    """A proxy with ``PROXY_METRICS_TOKEN`` set (in-memory store)."""
    settings = proxy_settings(fake_upstream.url, None, "unused", metrics_token=Secret(METRICS_TOKEN))
    async with ProxyServer(settings) as server:
        yield server


@pytest.mark.parametrize("token", [None, "", "wrong", METRICS_TOKEN[:-1], METRICS_TOKEN + "x"])
async def test_metrics_token_is_required_when_set(token_proxy: ProxyServer, token: str | None) -> None:
    """Without the exact bearer token /metrics is a 401 that exposes nothing."""
    reply = await send_raw(f"{token_proxy.base}/metrics", None, method="GET", api_key=token)
    assert reply.status == 401
    assert reply.json()["error"]["code"] == "invalid_metrics_token"
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert b"llm_proxy_" not in reply.body


async def test_metrics_token_opens_metrics(token_proxy: ProxyServer) -> None:
    """With the token, /metrics is the usual Prometheus page."""
    reply = await send_raw(f"{token_proxy.base}/metrics", None, method="GET", api_key=METRICS_TOKEN)
    assert reply.status == 200
    assert b"llm_proxy_requests_total" in reply.body


async def test_client_model_names_are_clipped_in_logs(
    proxy: ProxyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A long unpriced model name is logged cut to 120 characters, with how much was cut."""
    model = "sim-" + "y" * 250
    with caplog.at_level(logging.WARNING, logger="proxy.obs.accounting"):
        reply = await chat_raw(proxy, chat_body("hi", model=model), api_key=GOOD_KEY)
    assert reply.status == 200
    lines = [record.getMessage() for record in caplog.records if "no price for model" in record.getMessage()]
    assert lines
    assert all(model not in line and "y" * 116 in line and "(+134 chars)" in line for line in lines)
