"""The simulator's latency and hang knobs hold on the Images, Embeddings and Responses routes too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import openai
import pytest

from proxy.sim.png import make_png
from tests.fake_upstream import FakeUpstream
from tests.sim_clients import sdk_fixture, small_upstream_fixture

upstream = pytest.fixture(small_upstream_fixture)
client = pytest.fixture(sdk_fixture)

Call = Callable[[openai.AsyncOpenAI], Awaitable[object]]
CALLS: dict[str, tuple[Call, bool]] = {
    "images": (lambda c: c.images.generate(prompt="x"), True),
    "images_edits": (
        lambda c: c.images.edit(image=("x.png", make_png("x", 200), "image/png"), prompt="x"),
        True,
    ),
    "embeddings": (lambda c: c.embeddings.create(model="text-embedding-3-small", input="x"), False),
    "responses": (lambda c: c.responses.create(model="gpt-4o-mini", input="x"), False),
}


@pytest.mark.parametrize("name", list(CALLS))
async def test_latency_applies_and_image_latency_only_to_images(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, name: str
) -> None:
    """`latency_s` delays every answer; `image_latency_s` is added for the image routes only."""
    call, is_image = CALLS[name]
    upstream.state.latency_s = 0.2
    # Text routes must not wait for it: 60 s would blow the bound below if they did.
    upstream.state.image_latency_s = 0.3 if is_image else 60.0
    started = time.monotonic()
    await asyncio.wait_for(call(client), timeout=30)
    elapsed = time.monotonic() - started
    assert elapsed >= (0.5 if is_image else 0.2)
    assert upstream.state.calls[name] == 1


@pytest.mark.parametrize("name", list(CALLS))
async def test_hang_holds_answers_until_released(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, name: str
) -> None:
    """With `hang` on, a request waits (counted, unanswered) until the knob is switched off."""
    call, _ = CALLS[name]
    upstream.state.hang = True
    pending = asyncio.ensure_future(call(client))
    for _ in range(500):  # bounded wait for the request to arrive
        if upstream.state.calls[name]:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert upstream.state.calls[name] == 1
    assert not pending.done()
    upstream.state.hang = False
    await asyncio.wait_for(pending, timeout=30)


async def test_a_cut_responses_stream_drops_the_connection(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """`cut_stream_after_chunks` with `cut_stream_abort`: the SSE body breaks after that many events."""
    upstream.state.cut_stream_after_chunks = 3
    received: list[str] = []

    async def read_all() -> None:
        stream = await client.responses.create(model="gpt-4o-mini", input="x", stream=True)
        async for event in stream:
            received.append(event.type)

    with pytest.raises(openai.APIConnectionError):
        await read_all()
    assert received == ["response.created", "response.in_progress", "response.output_item.added"]
