"""No model is free by accident: real proxy processes, a real Redis, the simulator as upstream."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import aiohttp
import pytest

from proxy.obs.model_price import round_half_up
from tests.budget_processes import Tenant, chat, proxy_env, standing, start_proxy, until, write_config
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import metric_value

BUDGETED = Tenant("capped", "sk-lcp-capped-tenant-secret-0001", budget_usd=1.0)
UNLIMITED = Tenant("open", "sk-lcp-open-tenant-secret-00002")
OLD_GEMINI = "gemini-1.0-pro"  # a real model the built-in table does not price


def body(model: str, text: str = "hello") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def metrics(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        return await response.text()


def spend_of(reply_json: dict[str, object], input_per_m: float, output_per_m: float) -> int:
    """What the proxy must have charged for an answer at these per-million prices (exact)."""
    usage = reply_json["usage"]
    assert isinstance(usage, dict)
    exact = usage["prompt_tokens"] * Fraction(str(input_per_m)) + usage["completion_tokens"] * Fraction(
        str(output_per_m)
    )
    return round_half_up(exact)


async def test_unpriced_model_is_refused_before_upstream_for_a_budgeted_key(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """403 model_not_priced naming the model and the fix; the upstream sees nothing. Keys without a
    budget still get the model, at cost 0, counted as unknown."""
    config = write_config(tmp_path / "keys.toml", [BUDGETED, UNLIMITED])
    proxy = start_proxy(proxy_env(fake_upstream.url, redis_url, key_prefix, config))
    try:
        refused = await chat(proxy.url, body(OLD_GEMINI), BUDGETED.secret)
        calls_after_refusal = fake_upstream.chat_calls
        served = await chat(proxy.url, body(OLD_GEMINI), UNLIMITED.secret)
        text = await metrics(proxy.base)
    finally:
        proxy.stop()
        proxy.close()
    assert refused.status == 403
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "model_not_priced",
        "model",
    )
    assert OLD_GEMINI in error["message"]
    assert f'[pricing."{OLD_GEMINI}"]' in error["message"]
    assert "input_per_million" in error["message"]
    assert "output_per_million" in error["message"]
    assert "PROXY_CONFIG" in error["message"]
    assert "PROXY_ALLOW_UNPRICED_MODELS" in error["message"]
    assert calls_after_refusal == 0
    assert served.status == 200
    assert fake_upstream.chat_calls == 1
    assert (await standing(redis_url, key_prefix, BUDGETED.id)).spent == 0
    assert metric_value(text, "llm_proxy_unknown_model_total", model=OLD_GEMINI) == 1


async def test_model_priced_only_by_the_upstream_list_is_admitted_and_charged_its_price(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """sim-text-1 is priced only in the upstream's /v1/models (2.5 / 10 USD per million): once the
    list is loaded a budgeted key uses it and is charged exactly that."""
    config = write_config(tmp_path / "keys.toml", [BUDGETED])
    env = proxy_env(fake_upstream.url, redis_url, key_prefix, config, PROXY_UPSTREAM_PRICES="true")
    fake_upstream.state.valid_keys = {"sk-upstream-of-the-proxy"}
    proxy = start_proxy(env)
    replies = []
    try:

        async def admitted() -> bool:
            replies.append(await chat(proxy.url, body("sim-text-1"), BUDGETED.secret))
            return replies[-1].status != 403

        await until(admitted, what="the upstream's price list to be loaded")
    finally:
        proxy.stop()
        proxy.close()
    assert all(r.json()["error"]["code"] == "model_not_priced" for r in replies[:-1])
    answer = replies[-1]
    assert answer.status == 200
    assert fake_upstream.state.calls["models"] >= 1
    assert fake_upstream.chat_calls == 1
    spent = (await standing(redis_url, key_prefix, BUDGETED.id)).spent
    assert spent == spend_of(answer.json(), 2.5, 10)


async def test_toml_beats_the_upstream_list_and_the_default_prices_the_rest(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """TOML [pricing."sim-text-1"] wins over the upstream's price; [pricing."*"] prices a model
    nobody lists."""
    pricing = {
        "sim-text-1": {"input_per_million": 1, "output_per_million": 2},
        "*": {"input_per_million": 3, "output_per_million": 4},
    }
    config = write_config(tmp_path / "keys.toml", [BUDGETED], pricing)
    env = proxy_env(
        fake_upstream.url, redis_url, key_prefix, config, PROXY_UPSTREAM_PRICES="true", PROXY_LOG_LEVEL="info"
    )
    proxy = start_proxy(env)
    try:
        await proxy.wait_for_output("loaded prices of")
        own = await chat(proxy.url, body("sim-text-1", "priced by toml"), BUDGETED.secret)
        spent_own = (await standing(redis_url, key_prefix, BUDGETED.id)).spent
        new = await chat(proxy.url, body("brand-new-model-9", "priced by star"), BUDGETED.secret)
        spent_both = (await standing(redis_url, key_prefix, BUDGETED.id)).spent
    finally:
        proxy.stop()
        proxy.close()
    assert (own.status, new.status) == (200, 200)
    assert spent_own == spend_of(own.json(), 1, 2)
    assert spent_both - spent_own == spend_of(new.json(), 3, 4)


async def test_opting_in_lets_budgeted_keys_use_unpriced_models_at_no_cost(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """PROXY_ALLOW_UNPRICED_MODELS: admitted, charged 0, counted; logged once with the name clipped."""
    hostile = "unpriced-" + "x" * 200 + "\nFAKE LOG LINE"
    config = write_config(tmp_path / "keys.toml", [BUDGETED])
    env = proxy_env(fake_upstream.url, redis_url, key_prefix, config, PROXY_ALLOW_UNPRICED_MODELS="true")
    proxy = start_proxy(env)
    try:
        first = await chat(proxy.url, body(hostile, "one"), BUDGETED.secret)
        second = await chat(proxy.url, body(hostile, "two"), BUDGETED.secret)
        text = await metrics(proxy.base)
    finally:
        proxy.stop()
        output = proxy.output()
        proxy.close()
    assert (first.status, second.status) == (200, 200)
    assert fake_upstream.chat_calls == 2
    assert (await standing(redis_url, key_prefix, BUDGETED.id)).spent == 0
    assert sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llm_proxy_unknown_model_total{")
    ) == pytest.approx(2)
    warnings = [line for line in output.splitlines() if "no price for model" in line]
    assert len(warnings) == 1
    assert "FAKE LOG LINE" not in output  # clipped, and its newline could never start a line
    assert len(warnings[0]) < 300
