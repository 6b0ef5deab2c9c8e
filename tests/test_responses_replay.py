"""A stored Responses API answer with every kind of output item the simulator does not make
(reasoning, a function call, a refusal, an annotated text) replayed as a stream the openai SDK
accumulates into the same ``Response``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.e2e_helpers import async_client
from tests.proxy_harness import ProxyServer, free_port, proxy_settings
from tests.responses_helpers import MODEL, plain

ANSWER: dict[str, Any] = {
    "id": "resp_scripted",
    "object": "response",
    "created_at": 1_700_000_000,
    "completed_at": 1_700_000_001,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "model": MODEL,
    "parallel_tool_calls": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}, "strict": True}],
    "top_p": 1.0,
    "output": [
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking."}]},
        {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "lookup",
            "arguments": '{"city":"Oslo"}',
            "status": "completed",
        },
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {
                    "type": "output_text",
                    "text": "See the docs.",
                    "annotations": [
                        {
                            "type": "url_citation",
                            "start_index": 4,
                            "end_index": 12,
                            "title": "D",
                            "url": "https://d.example",
                        }
                    ],
                    "logprobs": [],
                },
                {"type": "refusal", "refusal": "Not that part."},
            ],
        },
    ],
    "usage": {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 8},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 30},
        "total_tokens": 52,
    },
}


@pytest.fixture
async def scripted(redis_url: str, key_prefix: str) -> AsyncIterator[tuple[ProxyServer, list[bytes]]]:
    """The proxy in front of an upstream that answers every ``POST /v1/responses`` with ``ANSWER``."""
    calls: list[bytes] = []

    async def answer(request: web.Request) -> web.Response:
        calls.append(await request.read())
        return web.Response(body=orjson.dumps(ANSWER), content_type="application/json")

    upstream = web.Application()
    upstream.router.add_post("/v1/responses", answer)
    runner = web.AppRunner(upstream)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        settings = proxy_settings(f"http://127.0.0.1:{port}/v1", redis_url, key_prefix)
        async with ProxyServer(settings) as proxy:
            yield proxy, calls
    finally:
        await runner.cleanup()


async def test_every_item_kind_is_replayed_and_accumulated_into_the_stored_response(
    scripted: tuple[ProxyServer, list[bytes]],
) -> None:
    """Reasoning, function call (its arguments in one delta), a text part and a refusal part: the
    streamed HIT's events are in order and numbered, and the SDK ends with the stored Response
    (usage details passed through)."""
    proxy, calls = scripted
    async with async_client(proxy) as client:
        stored = await client.responses.create(model=MODEL, input="everything")
        async with client.responses.stream(model=MODEL, input="everything") as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
    assert len(calls) == 1
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert plain(final) == stored.to_dict()
    assert stored.to_dict()["output"] == ANSWER["output"]
    assert final.usage is not None
    assert (
        final.usage.input_tokens_details.cached_tokens,
        final.usage.output_tokens_details.reasoning_tokens,
    ) == (
        8,
        30,
    )
