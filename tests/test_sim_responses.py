"""The simulated Responses API driven with the openai SDK: objects, SSE events, tools, state."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseStreamEvent,
)
from openai.types.responses.response_output_item import ImageGenerationCall

from tests.fake_upstream import FakeUpstream
from tests.sim_clients import assert_openai_error, png_from_b64, sdk_fixture, small_upstream_fixture

upstream = pytest.fixture(small_upstream_fixture)
client = pytest.fixture(sdk_fixture)

MODEL = "gpt-4o-mini"
IMAGE_TOOL: dict[str, Any] = {"type": "image_generation", "partial_images": 2, "quality": "low"}
TEXT_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
IMAGE_EVENTS = [
    "response.output_item.added",
    "response.image_generation_call.in_progress",
    "response.image_generation_call.generating",
    "response.image_generation_call.partial_image",
    "response.image_generation_call.partial_image",
    "response.image_generation_call.completed",
    "response.output_item.done",
]


def without_deltas(types: list[str]) -> list[str]:
    """Event types with runs of text deltas folded into one."""
    folded: list[str] = []
    for kind in types:
        if not (kind == "response.output_text.delta" and folded and folded[-1] == kind):
            folded.append(kind)
    return folded


def comparable(response: Response) -> dict[str, Any]:
    """A response without what differs per call (id, times, item ids)."""
    body = response.to_dict()
    for name in ("id", "created_at", "completed_at"):
        body.pop(name, None)
    for item in body["output"]:
        item.pop("id")
    return body


async def test_non_streamed_response_parses_as_the_sdk_types(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """A completed `response` with one assistant message of output_text and token usage."""
    response = await client.responses.create(model=MODEL, input="Tell me a joke", instructions="Be brief")
    assert isinstance(response, Response)
    assert response.id.startswith("resp_")
    assert (response.object, response.status, response.model) == ("response", "completed", MODEL)
    assert response.instructions == "Be brief"
    (message,) = response.output
    assert isinstance(message, ResponseOutputMessage)
    assert (message.role, message.status) == ("assistant", "completed")
    (part,) = message.content
    assert isinstance(part, ResponseOutputText)
    assert response.output_text == part.text
    assert part.text.startswith("Echo: Tell me a joke #")
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == len("Be brief Tell me a joke") // 4
    assert usage.output_tokens == len(part.text) // 4
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert upstream.state.requests["responses"] == [
        {"model": MODEL, "input": "Tell me a joke", "instructions": "Be brief"}
    ]


async def test_stream_is_the_responses_event_sequence(client: openai.AsyncOpenAI) -> None:
    """stream=True: created, in_progress, the message's events, completed; sequence numbers count
    from 0; the completed response equals the non-streamed one (but for ids and times)."""
    stream = await client.responses.create(model=MODEL, input="Tell me a joke", stream=True)
    events: list[ResponseStreamEvent] = [event async for event in stream]
    types = [event.type for event in events]
    assert without_deltas(types) == [
        "response.created",
        "response.in_progress",
        *TEXT_EVENTS,
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.output_text == deltas
    created = events[0]
    assert created.type == "response.created"
    assert (created.response.status, created.response.output) == ("in_progress", [])
    plain = await client.responses.create(model=MODEL, input="Tell me a joke")
    assert comparable(completed.response) == comparable(plain)


async def test_stream_helper_accumulates_the_final_response(client: openai.AsyncOpenAI) -> None:
    """`client.responses.stream()` accumulates the events (image tool included) without error."""
    async with client.responses.stream(model=MODEL, input="Draw a cat", tools=[IMAGE_TOOL]) as stream:
        types = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert without_deltas(types) == [
        "response.created",
        "response.in_progress",
        *IMAGE_EVENTS,
        *TEXT_EVENTS,
        "response.completed",
    ]
    call, message = final.output
    assert isinstance(call, ImageGenerationCall)
    assert isinstance(message, ResponseOutputMessage)
    assert final.output_text.startswith("Echo: Draw a cat")


async def test_image_tool_adds_a_generation_call_with_a_png(client: openai.AsyncOpenAI) -> None:
    """The image_generation tool: an `image_generation_call` item whose `result` is a PNG (the
    same for the same request), partial images in the stream, and `tool_usage.image_gen`."""
    response = await client.responses.create(model=MODEL, input="Draw a cat", tools=[IMAGE_TOOL])
    call = response.output[0]
    assert isinstance(call, ImageGenerationCall)
    assert (call.status, call.quality, call.size, call.output_format) == (
        "completed",
        "low",
        "1024x1024",
        "png",
    )
    png = png_from_b64(str(call.result))
    assert response.tool_usage is not None
    assert response.tool_usage.image_gen.output_tokens == 272
    stream = await client.responses.create(model=MODEL, input="Draw a cat", tools=[IMAGE_TOOL], stream=True)
    events = [event async for event in stream]
    partials = [event for event in events if event.type == "response.image_generation_call.partial_image"]
    assert [event.partial_image_index for event in partials] == [0, 1]
    assert all(png_from_b64(event.partial_image_b64) != png for event in partials)
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    streamed_call = completed.response.output[0]
    assert isinstance(streamed_call, ImageGenerationCall)
    assert streamed_call.result == call.result
    none = await client.responses.create(
        model=MODEL, input="Draw a cat", tools=[IMAGE_TOOL], tool_choice="none"
    )
    assert [item.type for item in none.output] == ["message"]


async def test_answers_are_deterministic_per_request(client: openai.AsyncOpenAI) -> None:
    """The same request gets the same text; a different input or option gets another."""
    first = await client.responses.create(model=MODEL, input=[{"role": "user", "content": "hi"}])
    again = await client.responses.create(model=MODEL, input=[{"role": "user", "content": "hi"}])
    assert first.id != again.id
    assert first.output_text == again.output_text
    other = await client.responses.create(
        model=MODEL, input=[{"role": "user", "content": "hi"}], temperature=0.2
    )
    assert other.output_text != first.output_text


async def test_previous_response_id_must_be_stored(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """A stored id chains (and changes the answer); an unknown or unstored one is OpenAI's 400
    previous_response_not_found."""
    first = await client.responses.create(model=MODEL, input="hi")
    follow = await client.responses.create(model=MODEL, input="hi", previous_response_id=first.id)
    assert follow.previous_response_id == first.id
    assert follow.output_text != first.output_text
    unstored = await client.responses.create(model=MODEL, input="hi", store=False)
    for missing in ("resp_unknown", unstored.id):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model=MODEL, input="hi", previous_response_id=missing)
        message = assert_openai_error(
            {"error": caught.value.body}, param="previous_response_id", code="previous_response_not_found"
        )
        assert message == f"Previous response with id '{missing}' not found."
    upstream.state.responses_kept = 1  # the oldest go first
    newest = await client.responses.create(model=MODEL, input="newest")
    assert list(upstream.state.stored_responses) == [newest.id]
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model=MODEL, input="hi", previous_response_id=first.id)


async def test_background_is_queued_then_retrieved_completed(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """background=true answers `queued` with no output; GET /v1/responses/{id} returns it completed."""
    queued = await client.responses.create(model=MODEL, input="slow job", background=True)
    assert (queued.status, queued.background, queued.output, queued.usage) == ("queued", True, [], None)
    done = await client.responses.retrieve(queued.id)
    assert (done.id, done.status, done.background) == (queued.id, "completed", True)
    assert done.output_text.startswith("Echo: slow job")
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_missing")
    assert upstream.state.calls["responses_get"] == 2
    assert upstream.state.requests["responses_get"] == [
        {"response_id": queued.id},
        {"response_id": "resp_missing"},
    ]


async def test_conversation_state_changes_the_answer(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """The same request in a conversation gets a new answer each turn (mutable upstream state)."""
    answers = [
        await client.responses.create(model=MODEL, input="hi", conversation="conv_1") for _ in range(2)
    ]
    assert [answer.output_text.endswith(f"(turn {turn})") for turn, answer in enumerate(answers, 1)] == [
        True,
        True,
    ]
    assert answers[0].conversation is not None
    assert answers[0].conversation.id == "conv_1"
    assert upstream.state.conversation_turns["conv_1"] == 2


async def test_max_output_tokens_cuts_the_answer_incomplete(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """A text longer than max_output_tokens is cut: status incomplete, reason max_output_tokens,
    and the stream ends with `response.incomplete`."""
    upstream.state.completion_tokens = 500
    response = await client.responses.create(model=MODEL, input="go on", max_output_tokens=20)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 20
    stream = await client.responses.create(model=MODEL, input="go on", max_output_tokens=20, stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.incomplete"
    whole = await client.responses.create(model=MODEL, input="go on")
    assert whole.usage is not None
    assert whole.usage.output_tokens == 500


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        pytest.param({"input": "hi"}, "model", "missing_required_parameter", id="no-model"),
        pytest.param({"model": MODEL, "input": 5}, "input", "invalid_type", id="input-type"),
        pytest.param({"model": MODEL, "input": ["hi"]}, "input[0]", "invalid_type", id="item-type"),
        pytest.param({"model": MODEL, "input": "hi", "stream": "yes"}, "stream", "invalid_type", id="stream"),
        pytest.param(
            {"model": MODEL, "input": "hi", "max_output_tokens": 5},
            "max_output_tokens",
            "integer_below_min_value",
            id="max",
        ),
        pytest.param(
            {"model": MODEL, "input": "hi", "tools": [{"name": "x"}]}, "tools", "invalid_type", id="tools"
        ),
        pytest.param(
            {"model": MODEL, "input": "hi", "conversation": "c", "previous_response_id": "r"},
            "previous_response_id",
            "previous_response_not_found",
            id="prev-first",
        ),
        pytest.param(
            {"model": MODEL, "input": "hi", "background": True, "store": False},
            "background",
            None,
            id="bg-nostore",
        ),
        pytest.param(
            {"model": MODEL, "input": "hi", "tools": [{"type": "image_generation", "partial_images": 9}]},
            "partial_images",
            "integer_above_max_value",
            id="partials",
        ),
    ],
)
async def test_bad_response_requests_are_400(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, body: dict[str, Any], param: str, code: str | None
) -> None:
    """Bad input is a 400 in OpenAI's shape (BadRequestError), recorded, answered with nothing stored."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.post("/responses", body=body, cast_to=Response)
    assert_openai_error({"error": caught.value.body}, param=param, code=code)
    assert upstream.state.requests["responses"] == [body]
    assert upstream.state.stored_responses == {}


async def test_conversation_and_previous_response_are_exclusive(client: openai.AsyncOpenAI) -> None:
    """Both a conversation and a (stored) previous_response_id: 400, as OpenAI refuses the pair."""
    first = await client.responses.create(model=MODEL, input="hi")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model=MODEL, input="hi", conversation="conv_1", previous_response_id=first.id
        )
    assert_openai_error({"error": caught.value.body}, param="conversation", code=None)


async def test_input_images_count_in_usage(client: openai.AsyncOpenAI) -> None:
    """Input items with input_text and input_image parts: the image bills 765 input tokens; an
    input_image with neither image_url nor file_id is a 400."""
    content: list[dict[str, Any]] = [
        {"type": "input_text", "text": "What is in this picture?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"},
    ]
    response = await client.responses.create(model=MODEL, input=[{"role": "user", "content": content}])
    assert response.usage is not None
    assert response.usage.input_tokens == len("What is in this picture?") // 4 + 765
    assert response.output_text.startswith("Echo: What is in this picture? #")
    broken = [{"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.post("/responses", body={"model": MODEL, "input": broken}, cast_to=Response)
    assert_openai_error({"error": caught.value.body}, param="input[0]", code="missing_required_parameter")
