"""The errors a managed key's budget answers with, in OpenAI's shape (rendered by ``proxy.errors``)."""

from __future__ import annotations

from datetime import datetime

import orjson

from proxy.budget.types import BudgetRefusal
from proxy.errors import ProxyError
from proxy.keys.store import ManagedKey
from proxy.obs.pricing import micro_to_usd

MODEL_IN_MESSAGE_CHARS = 256  # the model name is the client's: bounded before it is echoed


def budget_exceeded(key: ManagedKey, refusal: BudgetRefusal, now: datetime) -> ProxyError:
    """429 ``insufficient_quota``; ``x-should-retry: false`` because waiting minutes will not help."""
    spent = micro_to_usd(refusal.spent_micro)
    budget = micro_to_usd(refusal.budget_micro)
    in_flight = micro_to_usd(refusal.reserved_micro)
    resets = "never (total budget)" if refusal.resets_at is None else refusal.resets_at.isoformat()
    message = (
        f"Budget exceeded for key '{key.alias}': spent {spent:.6f} of {budget:.6f} USD "
        f"this {key.period} ({in_flight:.6f} USD reserved by requests in flight; this request "
        f"needs about {micro_to_usd(refusal.estimate_micro):.6f} USD), resets at {resets}."
    )
    headers = {"x-should-retry": "false"}
    retry_after = refusal.retry_after_s(now)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return ProxyError(429, message, type="insufficient_quota", code="budget_exceeded", headers=headers)


def rate_limited(key: ManagedKey, retry_after: int) -> ProxyError:
    """429 ``rate_limit_exceeded``: retrying later is the right thing, so the SDK may retry."""
    return ProxyError(
        429,
        f"Rate limit reached for key '{key.alias}': {key.rpm} requests per minute.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )


def model_not_priced(key: ManagedKey, model: str) -> ProxyError:
    """403: a key with a budget asked for a model nothing prices; it would have been free."""
    shown = model[:MODEL_IN_MESSAGE_CHARS]
    toml_name = orjson.dumps(shown).decode()  # a quoted TOML basic string, escapes included
    return ProxyError(
        403,
        f"The model '{shown}' has no price, so the key '{key.alias}' (which has a budget) cannot "
        f"use it. The proxy operator can add [pricing.{toml_name}] with input_per_million and "
        f"output_per_million (USD per million tokens) to the PROXY_CONFIG file, set a default "
        f'price for every unpriced model with [pricing."*"], or allow unpriced models at no cost '
        f"with PROXY_ALLOW_UNPRICED_MODELS=true.",
        type="invalid_request_error",
        code="model_not_priced",
        param="model",
    )


def state_store_unsafe(problem: str) -> ProxyError:
    """503: the state Redis may evict budgets, so a key with a budget is not served blind."""
    return ProxyError(
        503,
        f"Budgets cannot be enforced right now: {problem}",
        type="server_error",
        code="state_store_unsafe",
    )
