"""``/v1/embeddings`` per caller: tenants apart, managed budgets for the missing items only, bad
input refused before anything is forwarded, cache controls and a Redis that is down."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from proxy.sim.embeddings import embeddings_body
from tests.e2e_helpers import async_client, send_raw
from tests.embedding_helpers import SMALL, embed, sent_inputs
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import (
    UPSTREAM_KEY,
    create_key,
    key_status,
    managed_proxy,
    metric_value,
    metrics_text,
)
from tests.proxy_harness import ProxyServer, free_port, proxy_settings
from tests.raw_upstream import RawUpstream, Received, json_response

# $0.10 per token instead of $0.02 per million: a budget of a few dollars runs out in a few calls.
PRICING = {SMALL: {"input_per_million": 100_000}}
MICRO_PER_TOKEN = 100_000
# Ten cached items of 15 tokens each (the simulator counts four characters per token).
WARM = [f"warm item {i:02d} ".ljust(60, ".") for i in range(10)]


async def test_bearers_never_share_items(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """Two pass-through bearers each pay for their own items; each then hits its own."""
    async with async_client(proxy, "sk-tenant-a") as a, async_client(proxy, "sk-tenant-b") as b:
        first = [await embed(sdk, model=SMALL, input=["same", "text"]) for sdk in (a, b)]
        again = [await embed(sdk, model=SMALL, input=["text", "same"]) for sdk in (a, b)]
    assert [r.cache for r in first] == [("MISS", "0/2"), ("MISS", "0/2")]
    assert [r.cache for r in again] == [("HIT", "2/2"), ("HIT", "2/2")]
    assert fake_upstream.state.calls["embeddings"] == 2


async def test_managed_keys_never_share_items_and_use_the_proxy_key(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Two managed keys (own namespaces) both miss; the upstream only ever sees the proxy's key."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        secrets = [(await create_key(proxy, alias=alias))[1] for alias in ("one", "two")]
        replies = []
        for secret in (*secrets, secrets[0]):
            async with async_client(proxy, secret) as sdk:
                replies.append(await embed(sdk, model=SMALL, input="private"))
    assert [r.cache[0] for r in replies] == ["MISS", "MISS", "HIT"]
    assert fake_upstream.state.auth_headers == [f"Bearer {UPSTREAM_KEY}"] * 2


async def test_a_managed_key_reserves_for_the_missing_items_only_and_gets_429_when_spent(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A key sharing a namespace pays only for the item the cache lacked (a batch it could not
    afford whole is served); cached items are free and counted as savings; once the budget is
    spent a miss is 429 insufficient_quota (no SDK retry, nothing forwarded) while hits go on."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix, pricing=PRICING) as proxy:
        _, rich = await create_key(proxy, alias="rich", budget_usd=100, cache_namespace="team")
        poor_key, poor = await create_key(proxy, alias="poor", budget_usd=1.0, cache_namespace="team")
        async with async_client(proxy, rich) as sdk:
            await embed(sdk, model=SMALL, input=WARM)
        async with async_client(proxy, poor) as sdk:
            mixed = await embed(sdk, model=SMALL, input=[*WARM, "new!"])  # 15 $ whole; 0.10 $ missing
            after_mixed = await key_status(proxy, poor_key["id"])
            await embed(sdk, model=SMALL, input="y" * 24)  # reserves 8 tokens, bills 6: 0.30 $ left
            with pytest.raises(openai.RateLimitError) as refused:
                await embed(sdk, model=SMALL, input="z" * 24)  # needs 0.80 $
            cached = await embed(sdk, model=SMALL, input=WARM[:3])
            spent = await key_status(proxy, poor_key["id"])
        text = await metrics_text(proxy)
    assert mixed.cache == ("MISS", "10/11")
    assert sent_inputs(fake_upstream) == [WARM, ["new!"], "y" * 24]
    assert after_mixed["spend_micro_usd"] == 1 * MICRO_PER_TOKEN
    assert after_mixed["cache_savings_usd"] == pytest.approx(150 * MICRO_PER_TOKEN / 1e6)
    assert (refused.value.status_code, refused.value.code) == (429, "budget_exceeded")
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert cached.cache == ("HIT", "3/3")
    assert spent["spend_micro_usd"] == 7 * MICRO_PER_TOKEN
    assert spent["reserved_usd"] == 0
    assert metric_value(text, "llm_proxy_tokens_saved_total", key="poor") == 150 + 45


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"model": SMALL, "input": ""}, "input", id="empty-string"),
        pytest.param({"model": SMALL, "input": ["a", ""]}, "input", id="empty-item"),
        pytest.param({"model": SMALL, "input": []}, "input", id="empty-list"),
        pytest.param({"model": SMALL, "input": [[1], []]}, "input", id="empty-token-array"),
        pytest.param({"model": SMALL, "input": ["a", [1]]}, "input", id="mixed"),
        pytest.param({"model": SMALL, "input": [1, -2]}, "input", id="negative-token"),
        pytest.param({"model": SMALL, "input": [1, 2**40]}, "input", id="huge-token"),
        pytest.param({"model": SMALL, "input": [True]}, "input", id="bool-token"),
        pytest.param({"model": SMALL, "input": {"text": "a"}}, "input", id="object"),
        pytest.param({"model": SMALL, "input": 7}, "input", id="number"),
        pytest.param({"model": SMALL, "input": ["a"] * 2049}, "input", id="2049-items"),
        pytest.param({"model": SMALL}, "input", id="no-input"),
        pytest.param({"input": "a"}, "model", id="no-model"),
        pytest.param({"model": 3, "input": "a"}, "model", id="model-type"),
        pytest.param({"model": "m" * 257, "input": "a"}, "model", id="model-too-long"),
        pytest.param(
            {"model": SMALL, "input": "a", "encoding_format": "hex"}, "encoding_format", id="encoding"
        ),
        pytest.param({"model": SMALL, "input": "a", "dimensions": 0}, "dimensions", id="dimensions-0"),
        pytest.param({"model": SMALL, "input": "a", "dimensions": "8"}, "dimensions", id="dimensions-type"),
        pytest.param({"model": SMALL, "input": "a", "user": 7}, "user", id="user"),
        pytest.param([SMALL, "a"], None, id="not-an-object"),
    ],
)
async def test_bad_input_is_400_and_nothing_is_forwarded(
    proxy: ProxyServer, fake_upstream: FakeUpstream, body: Any, param: str | None
) -> None:
    """Malformed requests get 400 invalid_request_error in OpenAI's shape, naming the parameter."""
    reply = await send_raw(f"{proxy.url}/embeddings", body if isinstance(body, dict) else str(body).encode())
    assert reply.status == 400
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert fake_upstream.state.calls["embeddings"] == 0


async def test_the_sdk_raises_bad_request_for_an_empty_string(proxy: ProxyServer) -> None:
    """``embeddings.create(input="")`` raises BadRequestError from the proxy's own 400."""
    async with async_client(proxy) as sdk:
        with pytest.raises(openai.BadRequestError) as raised:
            await sdk.embeddings.create(model=SMALL, input="")
    assert raised.value.param == "input"


async def test_cache_controls_apply_to_every_item(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """``no-store`` fetches and keeps nothing; ``no-cache`` forwards everything and refreshes it."""
    async with async_client(proxy) as sdk:
        no_store = await embed(
            sdk, model=SMALL, input=["m", "n"], extra_headers={"Cache-Control": "no-store"}
        )
        plain = await embed(sdk, model=SMALL, input=["m", "n"])
        refreshed = await embed(
            sdk, model=SMALL, input=["n", "m"], extra_headers={"Cache-Control": "no-cache"}
        )
        hit = await embed(sdk, model=SMALL, input=["m"])
    assert [r.cache for r in (no_store, plain, refreshed, hit)] == [
        ("MISS", "0/2"),
        ("MISS", "0/2"),
        ("BYPASS", "0/2"),
        ("HIT", "1/1"),
    ]
    assert sent_inputs(fake_upstream) == [["m", "n"], ["m", "n"], ["n", "m"]]


async def test_a_redis_that_is_down_means_bypass(fake_upstream: FakeUpstream, key_prefix: str) -> None:
    """No Redis: every request goes upstream as sent, with ``X-Cache: BYPASS``, and is answered."""
    settings = proxy_settings(fake_upstream.url, f"redis://127.0.0.1:{free_port()}/0", key_prefix)
    async with ProxyServer(settings) as proxy, async_client(proxy) as sdk:
        replies = [await embed(sdk, model=SMALL, input=["b", "a", "b"]) for _ in range(2)]
    assert [r.cache for r in replies] == [("BYPASS", "0/3"), ("BYPASS", "0/3")]
    assert sent_inputs(fake_upstream) == [["b", "a"], ["b", "a"]]
    assert replies[0].vectors() == replies[1].vectors()


def _answer_without_vectors(request: Received) -> bytes:
    """A valid answer for a request of one item ("a"); a 200 without any vector for anything else."""
    body = orjson.loads(request.body)
    if body["input"] == "a":
        return json_response(embeddings_body(body))
    return json_response({"object": "list", "data": [], "model": SMALL, "usage": {"prompt_tokens": 1}})


async def test_an_unusable_answer_for_the_missing_items_is_502_and_nothing_is_stored(key_prefix: str) -> None:
    """A 200 that is not one vector per missing item cannot be merged: 502 upstream_invalid_response
    (the cached item is not served alone), nothing stored, the next request asks again."""
    async with RawUpstream(_answer_without_vectors) as upstream:
        settings = proxy_settings(upstream.url, None, key_prefix)
        async with ProxyServer(settings) as proxy:
            url = f"{proxy.url}/embeddings"
            replies = [
                await send_raw(url, {"model": SMALL, "input": given}) for given in ("a", ["a", "b"], ["b"])
            ]
    assert [r.status for r in replies] == [200, 502, 200]
    assert replies[1].json()["error"]["code"] == "upstream_invalid_response"
    assert replies[1].headers["X-Cache-Items"] == "1/2"
    assert [orjson.loads(r.body)["input"] for r in upstream.complete] == ["a", ["b"], ["b"]]
