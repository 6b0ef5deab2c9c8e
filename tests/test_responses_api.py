"""``POST /v1/responses`` through the proxy: the openai SDK against the simulator, real Redis.

MISS then HIT with no second upstream call, one entry for JSON and ``stream: true`` (a streamed
hit is the Responses event sequence the SDK accumulates), what the key covers
(``previous_response_id``, ``store``) and what is never cached (``conversation``, ``background``,
an unversioned ``prompt``), tenant isolation, incomplete and cut answers not stored.
"""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tests.e2e_helpers import async_client
from tests.fake_upstream import FakeUpstream
from tests.images_helpers import named_events
from tests.proxy_harness import ProxyServer
from tests.responses_helpers import MODEL, TEXT_EVENTS, folded, plain, respond_raw


async def test_create_misses_then_hits_without_a_second_upstream_call(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """responses.create twice: MISS then HIT, one upstream call, the same bytes and Response."""
    async with async_client(proxy) as client:
        first = await client.responses.with_raw_response.create(model=MODEL, input="Tell me a joke")
        second = await client.responses.with_raw_response.create(model=MODEL, input="Tell me a joke")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.headers["X-Cache-Key"] == second.headers["X-Cache-Key"]
    assert fake_upstream.state.calls["responses"] == 1
    assert first.content == second.content
    answer = second.parse()
    assert isinstance(answer, Response)
    assert answer.status == "completed"
    assert answer.output_text.startswith("Echo: Tell me a joke")
    assert answer.usage is not None
    assert answer.usage.input_tokens_details.cached_tokens == 0
    assert answer.usage.output_tokens_details.reasoning_tokens == 0
    assert fake_upstream.state.requests["responses"] == [{"model": MODEL, "input": "Tell me a joke"}]


async def test_a_streamed_miss_is_stored_and_serves_a_json_hit(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """stream=True first: the live events are relayed (completed last), the folded response is
    stored, and the JSON request is a HIT equal to the stream's completed response."""
    async with async_client(proxy) as client:
        stream = await client.responses.create(model=MODEL, input="stream first", stream=True)
        events: list[ResponseStreamEvent] = [event async for event in stream]
        hit = await client.responses.with_raw_response.create(model=MODEL, input="stream first")
    assert folded([e.type for e in events]) == [
        "response.created",
        "response.in_progress",
        *TEXT_EVENTS,
        "response.completed",
    ]
    assert hit.headers["X-Cache"] == "HIT"
    assert fake_upstream.state.calls["responses"] == 1
    completed = events[-1]
    assert completed.type == "response.completed"
    assert hit.parse().to_dict() == completed.response.to_dict()


async def test_a_json_miss_serves_a_stream_hit_the_sdk_accumulates(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """JSON first: a streamed request is a HIT replayed as created, in_progress, the message's
    events (one delta with the whole text), completed, numbered from 0; the SDK's stream helper
    ends with the stored response."""
    async with async_client(proxy) as client:
        request = {"model": MODEL, "input": "json first", "instructions": "Be brief"}
        stored = await client.responses.create(**request)
        async with client.responses.stream(**request) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
    assert fake_upstream.state.calls["responses"] == 1
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        *TEXT_EVENTS,
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    (delta,) = [e for e in events if e.type == "response.output_text.delta"]
    assert delta.delta == stored.output_text
    created = events[0]
    assert created.type == "response.created"
    assert (created.response.id, created.response.status, created.response.output) == (
        stored.id,
        "in_progress",
        [],
    )
    assert plain(final) == stored.to_dict()
    assert final.output_text == stored.output_text


async def test_a_stream_hit_on_the_wire_names_every_event(proxy: ProxyServer) -> None:
    """A replay is ``event: <type>`` + data per event, no ``[DONE]``, X-Cache: HIT with the key."""
    body = {"model": MODEL, "input": "wire", "stream": True}
    miss = await respond_raw(proxy, body)
    hit = await respond_raw(proxy, body)
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert hit.headers["Content-Type"].startswith("text/event-stream")
    assert b"[DONE]" not in hit.body
    events = named_events(hit.body)
    assert all(name == data["type"] for name, data in events)
    assert events[-1][1]["response"] == named_events(miss.body)[-1][1]["response"]


async def test_identical_concurrent_requests_make_one_upstream_call(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Six identical misses at once, three streamed: one upstream call, one MISS, the others
    COALESCED (or HIT if late), the JSON answers byte-identical."""
    fake_upstream.state.latency_s = 0.5
    body = {"model": MODEL, "input": "crowd"}
    replies = await asyncio.gather(
        *(respond_raw(proxy, {**body, "stream": index % 2 == 1}) for index in range(6))
    )
    assert fake_upstream.state.calls["responses"] == 1
    assert [r.headers["X-Cache"] for r in replies].count("MISS") == 1
    assert {r.headers["X-Cache"] for r in replies} <= {"MISS", "COALESCED", "HIT"}
    assert len({r.body for r in replies[0::2]}) == 1
    finals = [named_events(r.body)[-1][1]["response"] for r in replies[1::2]]
    assert all(final == finals[0] for final in finals)


async def test_previous_response_id_is_part_of_the_key(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """The same input after two different previous responses, and without one: three entries;
    the same continuation again: a HIT."""
    async with async_client(proxy) as client:
        one = await client.responses.create(model=MODEL, input="first turn")
        two = await client.responses.create(model=MODEL, input="another first turn")
        replies = [
            await client.responses.with_raw_response.create(
                model=MODEL, input="next", **({"previous_response_id": prev} if prev else {})
            )
            for prev in (one.id, two.id, None, one.id)
        ]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "MISS", "MISS", "HIT"]
    assert fake_upstream.state.calls["responses"] == 5
    assert replies[3].parse().previous_response_id == one.id


async def test_store_false_and_store_true_are_two_entries(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """An answer made with ``store: false`` has an id the upstream never kept: it is not served to
    a request that may continue from its id (absent ``store`` is ``true``)."""
    body = {"model": MODEL, "input": "stored upstream?"}
    replies = [
        await respond_raw(proxy, {**body, "store": False}),
        await respond_raw(proxy, body),
        await respond_raw(proxy, {**body, "store": True}),
        await respond_raw(proxy, {**body, "store": False, "stream": True}),
    ]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "MISS", "HIT", "HIT"]
    assert fake_upstream.state.calls["responses"] == 2


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"conversation": "conv_team"}, id="conversation"),
        pytest.param({"conversation": {"id": "conv_team"}}, id="conversation-object"),
        pytest.param({"background": True}, id="background"),
        pytest.param({"prompt": {"id": "pmpt_1"}}, id="prompt-without-version"),
    ],
)
async def test_answers_that_depend_on_upstream_state_are_never_cached(
    proxy: ProxyServer, fake_upstream: FakeUpstream, extra: dict[str, object]
) -> None:
    """``conversation``, ``background: true`` and a ``prompt`` without ``version``: BYPASS every
    time, each request goes upstream (a conversation's next turn is a different answer)."""
    body = {"model": MODEL, "input": "stateful", **extra}
    replies = [await respond_raw(proxy, body) for _ in range(2)]
    assert [r.status for r in replies] == [200, 200]
    assert [r.headers["X-Cache"] for r in replies] == ["BYPASS", "BYPASS"]
    assert fake_upstream.state.calls["responses"] == 2
    if "conversation" in extra:
        texts = [r.json()["output"][0]["content"][0]["text"] for r in replies]
        assert texts[0].endswith("(turn 1)")
        assert texts[1].endswith("(turn 2)")


async def test_a_versioned_prompt_is_cached(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """A ``prompt`` pinned to a ``version`` is immutable upstream: MISS then HIT."""
    body = {"model": MODEL, "prompt": {"id": "pmpt_1", "version": "2", "variables": {"city": "Oslo"}}}
    replies = [await respond_raw(proxy, body) for _ in range(2)]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "HIT"]
    assert fake_upstream.state.calls["responses"] == 1


async def test_two_bearers_never_share_a_response(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """The same request from two pass-through tenants (scope ``key``): two entries, two calls."""
    async with async_client(proxy, "sk-tenant-one") as one, async_client(proxy, "sk-tenant-two") as two:
        first = await one.responses.with_raw_response.create(model=MODEL, input="tenants")
        other = await two.responses.with_raw_response.create(model=MODEL, input="tenants")
        again = await one.responses.with_raw_response.create(model=MODEL, input="tenants")
    assert [r.headers["X-Cache"] for r in (first, other, again)] == ["MISS", "MISS", "HIT"]
    assert first.headers["X-Cache-Key"] != other.headers["X-Cache-Key"]
    assert fake_upstream.state.calls["responses"] == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_incomplete_response_is_passed_on_and_not_stored(
    proxy: ProxyServer, fake_upstream: FakeUpstream, stream: bool
) -> None:
    """Cut at the client's ``max_output_tokens`` (status ``incomplete``): the client gets it, the
    next identical request goes upstream again."""
    body = {"model": MODEL, "input": "long " * 60, "max_output_tokens": 16, "stream": stream}
    replies = [await respond_raw(proxy, body) for _ in range(2)]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "MISS"]
    final = named_events(replies[0].body)[-1][1]["response"] if stream else replies[0].json()
    assert final["status"] == "incomplete"
    assert fake_upstream.state.calls["responses"] == 2


async def test_a_cut_stream_ends_with_an_error_event_and_is_not_stored(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """The upstream drops the connection mid-stream: the client gets an ``error`` event numbered
    after the last one it saw (the SDK raises APIError), nothing is stored."""
    fake_upstream.state.cut_stream_after_chunks = 4
    body = {"model": MODEL, "input": "cut", "stream": True}
    cut = await respond_raw(proxy, body)
    events = named_events(cut.body)
    assert [name for name, _ in events][-1] == "error"
    assert events[-1][1]["code"] == "upstream_stream_cut"
    assert events[-1][1]["sequence_number"] == 4
    async with async_client(proxy) as client:
        stream = await client.responses.create(model=MODEL, input="cut", stream=True)
        with pytest.raises(openai.APIError, match="ended before"):
            async for _ in stream:
                pass
    fake_upstream.state.cut_stream_after_chunks = None
    again = await respond_raw(proxy, body)
    assert again.headers["X-Cache"] == "MISS"
    assert fake_upstream.state.calls["responses"] == 3
