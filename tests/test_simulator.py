"""The simulated upstream: real PNGs, deterministic answers, OpenAI JSON/SSE shapes, fault knobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.fake_upstream import FakeUpstream, assert_valid_png, fake_upstream_fixture, png_of

IMAGE_MODEL = "gemini-2.5-flash-image-preview"
JSON = dict[str, Any]

upstream = pytest.fixture(fake_upstream_fixture)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def chat_body(content: str = "a cat", model: str = "gpt-4o-mini", **extra: Any) -> JSON:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def post_chat(
    session: aiohttp.ClientSession, upstream: FakeUpstream, body: Any, key: str = "sk-test"
) -> tuple[int, bytes]:
    async with session.post(
        f"{upstream.url}/chat/completions",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    ) as response:
        return response.status, await response.read()


def sse_events(raw: bytes) -> list[bytes]:
    """The payloads of an SSE body, asserting every event is a `data: ` line."""
    assert raw.endswith(b"\n\n")
    events = raw[:-2].split(b"\n\n")
    assert all(event.startswith(b"data: ") for event in events)
    return [event[len(b"data: ") :] for event in events]


async def test_image_model_answers_in_llmgateway_format(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Image models return message.images with a ~1.5 MB PNG data URL and 1290 tokens."""
    status, raw = await post_chat(session, upstream, chat_body("a puppy", IMAGE_MODEL))
    assert status == 200
    body = orjson.loads(raw)
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == IMAGE_MODEL
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"].startswith("Here's an image")
    (image,) = message["images"]
    assert image["type"] == "image_url"
    png = png_of(image["image_url"]["url"])
    assert_valid_png(png)
    assert 1_450_000 < len(png) < 1_550_000
    usage = body["usage"]
    assert usage["completion_tokens"] == 1290
    assert usage["total_tokens"] == usage["prompt_tokens"] + 1290


async def test_images_are_deterministic_per_prompt(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Identical requests get identical PNGs, different prompts or seeds different ones."""
    upstream.state.image_bytes = 30_000

    async def image(prompt: str, **extra: Any) -> str:
        _, raw = await post_chat(session, upstream, chat_body(prompt, IMAGE_MODEL, **extra))
        url: str = orjson.loads(raw)["choices"][0]["message"]["images"][0]["image_url"]["url"]
        return url

    first = await image("a fox")
    assert await image("a fox") == first
    assert await image("a hen") != first
    assert await image("a fox", seed=7) != first


async def test_text_model_echoes_deterministically(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Text answers echo the last user message, are stable, and report plausible usage."""
    prompt = "What is the capital of France? " * 4
    _, raw1 = await post_chat(session, upstream, chat_body(prompt))
    _, raw2 = await post_chat(session, upstream, chat_body(prompt))
    one, two = orjson.loads(raw1), orjson.loads(raw2)
    content = one["choices"][0]["message"]["content"]
    assert content.startswith("Echo: What is the capital")
    assert two["choices"][0]["message"]["content"] == content
    assert one["id"] != two["id"]
    assert one["usage"]["prompt_tokens"] == len(prompt) // 4
    assert one["usage"]["completion_tokens"] == len(content) // 4
    assert one["choices"][0]["finish_reason"] == "stop"


async def test_n_and_max_tokens_are_honoured(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    """`n` gives several choices; a small max_tokens truncates with finish_reason length."""
    _, raw = await post_chat(session, upstream, chat_body("hello", n=3))
    assert [c["index"] for c in orjson.loads(raw)["choices"]] == [0, 1, 2]
    _, raw = await post_chat(session, upstream, chat_body("hello " * 50, max_tokens=2))
    choice = orjson.loads(raw)["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) == 8


async def test_stream_is_openai_sse(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    """A text stream: role first, content in several deltas, finish chunk, no usage, [DONE]."""
    _, plain = await post_chat(session, upstream, chat_body("stream me please"))
    _, raw = await post_chat(session, upstream, chat_body("stream me please", stream=True))
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks[1:-1]]
    assert len(pieces) >= 2
    expected = orjson.loads(plain)["choices"][0]["message"]["content"]
    assert "".join(pieces) == expected
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all("usage" not in chunk for chunk in chunks)


async def test_stream_usage_chunk_only_when_asked(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """include_usage adds a final `choices: []` chunk carrying usage before [DONE]."""
    body = chat_body("count me", stream=True, stream_options={"include_usage": True})
    _, raw = await post_chat(session, upstream, body)
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    last = orjson.loads(events[-2])
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] > 0
    assert orjson.loads(events[-3])["choices"][0]["finish_reason"] == "stop"


async def test_stream_image_delta_holds_whole_data_url(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Streamed image models send the complete data URL in one `images` delta."""
    upstream.state.image_bytes = 30_000
    _, plain = await post_chat(session, upstream, chat_body("a boat", IMAGE_MODEL))
    _, raw = await post_chat(session, upstream, chat_body("a boat", IMAGE_MODEL, stream=True))
    deltas = [orjson.loads(e)["choices"][0]["delta"] for e in sse_events(raw)[:-1]]
    images = [image for delta in deltas for image in delta.get("images", [])]
    (image,) = images
    assert image["index"] == 0
    assert image["type"] == "image_url"
    expected = orjson.loads(plain)["choices"][0]["message"]["images"][0]["image_url"]["url"]
    assert image["image_url"]["url"] == expected
    assert_valid_png(png_of(expected))


async def test_tool_calls_stream_and_non_stream(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """With tools, the model calls one; streamed arguments span 2+ deltas and reassemble."""
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    _, plain = await post_chat(session, upstream, chat_body("weather in Oslo", tools=tools))
    choice = orjson.loads(plain)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "lookup"
    assert orjson.loads(call["function"]["arguments"])["query"] == "weather in Oslo"

    body = chat_body("weather in Oslo", tools=tools, stream=True)
    _, raw = await post_chat(session, upstream, body)
    chunks = [orjson.loads(event) for event in sse_events(raw)[:-1]]
    head = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert head["index"] == 0
    assert (head["id"], head["type"]) == (call["id"], "function")
    assert head["function"]["name"] == "lookup"
    parts = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]]
    assert len(parts) >= 2
    assert "".join(parts) == call["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_fail_next_answers_queued_errors(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Each queued (status, body) answers one chat call, then normal answers resume."""
    error = {"error": {"message": "slow down", "type": "rate_limit", "param": None, "code": None}}
    upstream.state.fail_next.extend([(429, error), (500, error)])
    assert await post_chat(session, upstream, chat_body()) == (429, orjson.dumps(error))
    assert (await post_chat(session, upstream, chat_body()))[0] == 500
    assert (await post_chat(session, upstream, chat_body()))[0] == 200
    assert upstream.chat_calls == 3


async def test_cut_stream_drops_connection_without_done(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """cut_stream_after_chunks sends N chunks then drops (or cleanly ends) with no [DONE]."""
    upstream.state.cut_stream_after_chunks = 2
    with pytest.raises(aiohttp.ClientPayloadError):
        await post_chat(session, upstream, chat_body("cut me short", stream=True))
    upstream.state.cut_stream_abort = False
    status, raw = await post_chat(session, upstream, chat_body("cut me short", stream=True))
    assert status == 200
    events = sse_events(raw)
    assert len(events) == 2
    assert b"[DONE]" not in events


async def test_valid_keys_reject_other_bearers_everywhere(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """With valid_keys set, an unknown bearer gets an OpenAI 401 on every route."""
    upstream.state.valid_keys = {"sk-good"}
    status, raw = await post_chat(session, upstream, chat_body(), key="sk-bad")
    assert status == 401
    assert orjson.loads(raw)["error"]["code"] == "invalid_api_key"
    assert (await post_chat(session, upstream, chat_body(), key="sk-good"))[0] == 200
    for path in ("/models", "/moderations"):
        async with session.get(upstream.url + path) as response:
            assert response.status == 401
        good = {"Authorization": "Bearer sk-good"}
        async with session.get(upstream.url + path, headers=good) as response:
            assert response.status == 200
    assert upstream.state.chat_requests == [chat_body()]


async def test_calls_and_requests_are_recorded(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Calls are counted per route; chat bodies and Authorization headers are kept."""
    await post_chat(session, upstream, chat_body("one"), key="sk-1")
    await post_chat(session, upstream, chat_body("two"), key="sk-2")
    async with session.get(upstream.url + "/models") as response:
        models = await response.json()
    assert {m["id"] for m in models["data"]} >= {"gpt-4o-mini", IMAGE_MODEL}
    state = upstream.state
    assert state.calls == {"chat": 2, "models": 1}
    assert state.auth_headers == ["Bearer sk-1", "Bearer sk-2"]
    assert [r["messages"][0]["content"] for r in state.chat_requests] == ["one", "two"]


async def test_other_paths_echo_what_arrived(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    """Unknown /v1 routes report method, path, query, body length and headers."""
    async with session.post(
        upstream.url + "/moderations?x=1", data=b"12345", headers={"X-Probe": "yes"}
    ) as response:
        echo = await response.json()
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/v1/moderations", "x=1")
    assert echo["body_len"] == 5
    assert echo["headers"]["X-Probe"] == "yes"
    assert upstream.state.calls["/v1/moderations"] == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"messages": []}',
        b'{"model": "m", "messages": [1]}',
        b'{"model": "m", "messages": [], "stream": "yes"}',
    ],
)
async def test_bad_bodies_get_openai_400(
    upstream: FakeUpstream, session: aiohttp.ClientSession, body: bytes
) -> None:
    """Malformed chat bodies get 400 invalid_request_error and are not recorded."""
    async with session.post(upstream.url + "/chat/completions", data=body) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert upstream.state.chat_requests == []


async def test_latency_and_in_flight_gauges(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    """latency_s delays answers; concurrent calls raise max_in_flight, which settles back."""
    upstream.state.latency_s = 0.1
    start = time.monotonic()
    await asyncio.gather(*(post_chat(session, upstream, chat_body(str(i))) for i in range(4)))
    assert 0.1 <= time.monotonic() - start < 1.0
    assert upstream.state.max_in_flight == 4
    assert upstream.state.in_flight == 0


async def test_hang_holds_until_client_gives_up(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """hang keeps the request open; the client times out and the handler is released."""
    upstream.state.hang = True
    with pytest.raises(asyncio.TimeoutError):
        async with session.post(
            upstream.url + "/chat/completions",
            json=chat_body(),
            timeout=aiohttp.ClientTimeout(total=0.2),
        ) as response:
            await response.read()
    for _ in range(100):
        if upstream.state.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert upstream.state.in_flight == 0


async def test_openai_sdk_parses_simulator_responses(upstream: FakeUpstream) -> None:
    """The sync openai SDK parses non-stream and stream answers, and raises on errors."""
    upstream.state.image_bytes = 30_000

    def run() -> tuple[Any, list[Any], type[Exception]]:
        client = openai.OpenAI(base_url=upstream.url, api_key="sk-test", max_retries=0)
        completion = client.chat.completions.create(
            model=IMAGE_MODEL, messages=[{"role": "user", "content": "a tree"}]
        )
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        upstream.state.valid_keys = {"sk-other"}
        try:
            client.models.list()
        except openai.APIError as exc:
            return completion, chunks, type(exc)
        finally:
            client.close()
        raise AssertionError("expected an authentication error")

    completion, chunks, error = await asyncio.to_thread(run)
    assert error is openai.AuthenticationError
    images = (completion.choices[0].message.model_extra or {})["images"]
    assert_valid_png(png_of(images[0]["image_url"]["url"]))
    assert completion.usage.completion_tokens == 1290
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Echo: hi")
    assert chunks[-1].usage is not None
