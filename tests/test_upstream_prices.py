"""Prices from the upstream's model list: LLMGateway's format parsed exactly, loaded in the background."""

from __future__ import annotations

import asyncio
import logging
import time
from fractions import Fraction
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from proxy.config import Secret
from proxy.obs.accounting import Accountant
from proxy.obs.metrics import ProxyMetrics
from proxy.obs.pricing import DEFAULT_PRICES, PriceTable
from proxy.obs.upstream_prices import UpstreamPrices, parse_model_list
from proxy.state import ACCOUNTANT, PRICE_LOADER
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, free_port, proxy_settings

BUILTIN = PriceTable()


def entry(model: str, **pricing: Any) -> dict[str, Any]:
    """One /v1/models entry as LLMGateway writes it (extra keys omitted)."""
    free = pricing.pop("free", False)
    aliases = pricing.pop("aliases", None)
    item: dict[str, Any] = {"id": model, "name": model, "family": "x", "free": free, "pricing": pricing}
    if aliases is not None:
        item["aliases"] = aliases
    return item


def parse(*entries: dict[str, Any]) -> dict[str, Any]:
    return parse_model_list({"data": list(entries)}, BUILTIN.lookup)


def test_decimal_strings_become_exact_micro_usd_per_token() -> None:
    """'0.0000025' and '2.5e-6' USD per token are exactly 2.5 micro-USD per token; no float drift."""
    prices = parse(
        entry("a", prompt="0.0000025", completion="0.00001"),
        entry("b", prompt="2.5e-6", completion="10.0e-6", image="0.00553", request="0.001"),
        entry("c", prompt="0.15e-6", completion="0.6e-6"),
    )
    assert prices["a"].input_per_million_usd == Fraction(5, 2)
    assert prices["a"].output_per_million_usd == 10
    assert prices["b"].input_per_million_usd == prices["a"].input_per_million_usd
    assert prices["b"].per_input_image_usd == Fraction("0.00553")
    assert prices["b"].per_request_usd == Fraction("0.001")
    table = PriceTable(upstream=prices)
    # 1,000,000 prompt + 1,000,000 completion tokens of "c" cost exactly 0.15 + 0.60 USD.
    assert table.cost_micro_usd("c", 1_000_000, 1_000_000) == 750_000
    assert table.cost_micro_usd("c", 7, 0) == 1  # 1.05 micro-USD rounds to 1


def test_aliases_free_and_unknown_prices() -> None:
    """Aliases price like their model; free:true is a price of 0; all-"0" without free is no price."""
    prices = parse(
        entry("m", prompt="1e-6", completion="2e-6", aliases=["m-alias", "M-2025"]),
        entry("free-one", prompt="0", completion="0", free=True),
        entry("unknown-one", prompt="0", completion="0", image="0", request="0"),
        entry("m-alias", prompt="9e-6", completion="9e-6"),  # a model's own entry beats an alias
    )
    assert prices["m-2025"] is prices["m"]
    assert prices["m-alias"].input_per_million_usd == 9
    assert prices["free-one"].input_per_million_usd == prices["free-one"].output_per_million_usd == 0
    assert "unknown-one" not in prices


@pytest.mark.parametrize(
    "pricing",
    [
        {"prompt": "-1e-6", "completion": "1e-6"},
        {"prompt": "NaN", "completion": "1e-6"},
        {"prompt": "Infinity", "completion": "1e-6"},
        {"prompt": "cheap", "completion": "1e-6"},
        {"prompt": "1e-6"},
        {"prompt": True, "completion": "1e-6"},
        {"prompt": "1" * 100, "completion": "1e-6"},
        {"prompt": "1e-6", "completion": "1e-6", "image": "-2"},
    ],
)
def test_unreadable_prices_are_skipped_never_guessed(pricing: dict[str, Any]) -> None:
    """Negative, non-finite, non-numeric, missing or oversized prices leave the model unpriced."""
    assert "bad" not in parse(entry("bad", **pricing), entry("good", prompt="1e-6", completion="1e-6"))


def test_list_metadata_comes_from_the_builtin_table() -> None:
    """The list says nothing about output limits: a known model keeps its built-in limits."""
    prices = parse(
        entry("gpt-4o", prompt="2e-6", completion="8e-6"),
        entry("new-model", prompt="1e-6", completion="1e-6"),
    )
    assert prices["gpt-4o"].max_output_tokens == DEFAULT_PRICES["gpt-4o"].max_output_tokens
    assert prices["gpt-4o"].input_per_million_usd == 2
    assert prices["new-model"].max_output_tokens == 4096


@pytest.mark.parametrize("doc", [[], {"data": "x"}, {"object": "list"}, "nope"])
def test_a_document_without_data_is_an_error(doc: Any) -> None:
    """Anything but an object with a data array is refused (the loader logs it and retries)."""
    with pytest.raises(ValueError, match="data"):
        parse_model_list(doc, BUILTIN.lookup)


def test_entries_that_are_not_models_are_ignored() -> None:
    """Non-objects, missing or oversized ids are skipped; the rest is read."""
    prices = parse_model_list(
        {
            "data": [
                3,
                None,
                {"id": 5},
                {"id": "x" * 300, "pricing": {}},
                entry("ok", prompt="1e-6", completion="1e-6"),
            ]
        },
        BUILTIN.lookup,
    )
    assert list(prices) == ["ok"]


async def _wait_loaded(proxy: ProxyServer, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while proxy.app[PRICE_LOADER].loads < 1:
        assert time.monotonic() < deadline, "the upstream's prices were never loaded"
        await asyncio.sleep(0.02)


async def test_the_proxy_loads_the_simulators_list_with_its_upstream_key(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """At start the proxy fetches /v1/models with its upstream key and prices what only it lists."""
    # The simulator answers /v1/models only to this key: a load proves the key was sent.
    fake_upstream.state.valid_keys = {"sk-proxy-upstream"}
    settings = proxy_settings(
        fake_upstream.url,
        None,
        key_prefix,
        upstream_prices=True,
        upstream_api_key=Secret("sk-proxy-upstream"),
    )
    async with ProxyServer(settings) as proxy:
        await _wait_loaded(proxy)
        table = proxy.app[ACCOUNTANT].prices
    assert fake_upstream.state.calls["models"] >= 1
    sim = table.lookup("sim-text-1")
    assert sim is not None
    assert (sim.input_per_million_usd, sim.output_per_million_usd) == (Fraction(5, 2), 10)
    assert table.lookup("sim-text") is sim
    assert table.lookup("sim-unpriced-1") is None
    free = table.lookup("sim-free-1")
    assert free is not None
    assert free.output_per_million_usd == 0


async def test_a_failing_list_is_logged_clipped_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable upstream is logged (bounded), leaves the built-in prices, and is retried."""
    accountant = Accountant(PriceTable(), ProxyMetrics(CollectorRegistry()))
    async with aiohttp.ClientSession() as session:
        loader = UpstreamPrices(
            accountant,
            session,
            f"http://127.0.0.1:{free_port()}/v1/models",
            authorization=None,
            refresh_s=0.05,
        )
        with caplog.at_level(logging.WARNING, logger="proxy.obs.upstream_prices"):
            task = asyncio.create_task(loader.run())
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    failures = [r for r in caplog.records if "could not load prices" in r.getMessage()]
    assert len(failures) >= 2  # retried
    assert all(len(r.getMessage()) < 400 for r in failures)
    assert loader.loads == 0
    assert accountant.prices.lookup("gpt-4o") is DEFAULT_PRICES["gpt-4o"]
