"""What the proxy reads from a ``POST /v1/responses`` body: the 400s (OpenAI's shape, nothing
forwarded), the fields the cache key covers, the budget's demand."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from proxy.cache.keys import cache_hash
from proxy.endpoints.responses import Responses
from tests.e2e_helpers import async_client
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer
from tests.responses_helpers import IMAGE_TOOL, MODEL, respond_raw

GOOD: dict[str, Any] = {"model": MODEL, "input": "hello"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(b"{not json", None, id="not-json"),
        pytest.param(b'"text"', None, id="not-an-object"),
        pytest.param({"input": "hello"}, "model", id="no-model"),
        pytest.param({**GOOD, "model": 4}, "model", id="model-number"),
        pytest.param({**GOOD, "model": ""}, "model", id="model-empty"),
        pytest.param({**GOOD, "model": "m" * 300}, "model", id="model-too-long"),
        pytest.param({"model": MODEL}, "input", id="no-input-nor-context"),
        pytest.param({**GOOD, "input": 7}, "input", id="input-number"),
        pytest.param({**GOOD, "input": {"role": "user"}}, "input", id="input-object"),
        pytest.param({**GOOD, "input": ["hi"]}, "input[0]", id="input-item-string"),
        pytest.param({**GOOD, "instructions": ["be brief"]}, "instructions", id="instructions-array"),
        pytest.param({**GOOD, "stream": "yes"}, "stream", id="stream-string"),
        pytest.param({**GOOD, "background": 1}, "background", id="background-number"),
        pytest.param({**GOOD, "store": "no"}, "store", id="store-string"),
        pytest.param({**GOOD, "max_output_tokens": 15}, "max_output_tokens", id="max-output-15"),
        pytest.param({**GOOD, "max_output_tokens": "100"}, "max_output_tokens", id="max-output-string"),
        pytest.param({**GOOD, "temperature": "hot"}, "temperature", id="temperature-string"),
        pytest.param({**GOOD, "tools": {"type": "web_search"}}, "tools", id="tools-object"),
        pytest.param(
            {**GOOD, "tools": [{"type": "image_generation", "model": 5}]}, "tools", id="image-model-number"
        ),
        pytest.param(
            {**GOOD, "tools": [{"type": "image_generation", "model": "m" * 300}]},
            "tools",
            id="image-model-too-long",
        ),
        pytest.param({**GOOD, "previous_response_id": 12}, "previous_response_id", id="previous-number"),
        pytest.param(
            {**GOOD, "previous_response_id": "resp_1", "conversation": "conv_1"},
            "conversation",
            id="previous-and-conversation",
        ),
    ],
)
async def test_bad_responses_requests_are_400_and_not_forwarded(
    proxy: ProxyServer, fake_upstream: FakeUpstream, body: bytes | dict[str, object], param: str | None
) -> None:
    """Invalid bodies get OpenAI's error shape (``invalid_request_error``, the param named) and
    never reach the upstream."""
    reply = await respond_raw(proxy, body)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"]
    assert fake_upstream.state.calls["responses"] == 0


async def test_the_sdk_raises_bad_request_for_a_missing_model(proxy: ProxyServer) -> None:
    """The openai SDK raises BadRequestError naming 'model', as it would against OpenAI."""
    async with async_client(proxy) as client:
        with pytest.raises(openai.BadRequestError, match="'model'"):
            await client.responses.create(input="no model")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "context", [{"previous_response_id": "resp_1"}, {"prompt": {"id": "pmpt_1", "version": "1"}}]
)
def test_input_may_be_left_out_when_the_context_comes_from_elsewhere(context: dict[str, Any]) -> None:
    """No ``input`` is accepted with a previous response or a prompt template."""
    parsed = Responses().parse(orjson.dumps({"model": MODEL, **context}), "application/json")
    assert parsed.model == MODEL


def digest(body: dict[str, Any]) -> str:
    """The cache digest of ``body`` in one namespace."""
    endpoint = Responses()
    return cache_hash(endpoint.key_fields(endpoint.parse(orjson.dumps(body), "")), "ns", endpoint.key_scope)


def test_delivery_fields_do_not_change_the_key() -> None:
    """``stream``, ``stream_options`` and ``background: false`` only change how the answer is
    delivered; ``store`` absent is ``store: true``."""
    base = digest(GOOD)
    assert digest({**GOOD, "stream": True, "stream_options": {"include_obfuscation": False}}) == base
    assert digest({**GOOD, "background": False}) == base
    assert digest({**GOOD, "store": True}) == base


@pytest.mark.parametrize(
    "change",
    [
        {"store": False},
        {"previous_response_id": "resp_1"},
        {"instructions": "Be brief"},
        {"tools": [IMAGE_TOOL]},
        {"metadata": {"team": "a"}},
        {"user": "alice"},
        {"safety_identifier": "alice"},
        {"max_output_tokens": 64},
        {"text": {"format": {"type": "json_object"}}},
        {"reasoning": {"effort": "high"}},
        {"include": ["reasoning.encrypted_content"]},
        {"some_future_field": 1},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_field_the_answer_can_depend_on_or_echo_changes_the_key(change: dict[str, Any]) -> None:
    """Each output-affecting or echoed field (unknown ones too) makes another entry."""
    assert digest({**GOOD, **change}) != digest(GOOD)


def test_the_other_apis_never_share_a_responses_entry() -> None:
    """The same fields under chat's scope are another digest (``key_scope``)."""
    endpoint = Responses()
    fields = endpoint.key_fields(endpoint.parse(orjson.dumps(GOOD), ""))
    assert cache_hash(fields, "ns", "responses") != cache_hash(fields, "ns", "")


def test_the_demand_counts_input_images_the_client_limit_and_the_image_tool() -> None:
    """Input images (data URLs apart from the text bound), ``max_output_tokens`` as the limit and
    the bound's field, one image per allowed call of the image tool, at its model's price."""
    image = "data:image/png;base64," + "A" * 3000
    body = {
        **GOOD,
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": image}]}],
        "max_output_tokens": 64,
        "tools": [IMAGE_TOOL],
        "max_tool_calls": 3,
    }
    endpoint = Responses()
    demand = endpoint.demand(endpoint.parse(orjson.dumps(body), ""))
    assert (demand.input_images, demand.images, demand.bound_param) == (1, 3, "max_output_tokens")
    assert demand.image_model == "gpt-image-1"
    assert demand.limits == {"max_output_tokens": 64}
    assert demand.prompt_tokens < 200  # the 3,000 base64 characters are counted as one image
    no_tool = endpoint.demand(endpoint.parse(orjson.dumps({**body, "tool_choice": "none"}), ""))
    assert (no_tool.images, no_tool.image_model) == (0, None)
    mini = {**body, "tools": [{**IMAGE_TOOL, "model": "gpt-image-1-mini"}]}
    assert endpoint.demand(endpoint.parse(orjson.dumps(mini), "")).image_model == "gpt-image-1-mini"
