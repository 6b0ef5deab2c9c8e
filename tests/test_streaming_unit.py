"""SSE parsing, stream assembly and replay (``proxy.upstream.sse``), as pure functions."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pybase64
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.endpoints.chat_stream import StreamAssembler, parse_chunk, replay_chunks
from proxy.sim.payloads import Completion, build_completion
from proxy.upstream.sse import SSEParser, sse

PROPERTY = settings(max_examples=150, deadline=None, database=None)

line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30)


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes | None]]:
    """An SSE body (LF or CRLF framing, comments, multi-line data) and the data of each event."""
    body = b""
    expected: list[bytes | None] = []
    for _ in range(draw(st.integers(0, 8))):
        newline = draw(st.sampled_from([b"\n", b"\r\n"]))
        if draw(st.booleans()) and draw(st.booleans()):
            body += b": keep-alive" + newline + newline
            expected.append(None)
            continue
        lines = draw(st.lists(line_text, min_size=1, max_size=3))
        spaced = draw(st.booleans())
        for line in lines:
            body += (b"data: " if spaced else b"data:") + line.encode() + newline
        body += newline
        # The spec drops one space after "data:", so an unspaced line starting with one loses it.
        kept = [line[1:] if not spaced and line.startswith(" ") else line for line in lines]
        expected.append(b"\n".join(line.encode() for line in kept))
    return body, expected


@PROPERTY
@given(sse_streams(), st.data())
def test_sse_parser_is_independent_of_chunk_boundaries(
    stream: tuple[bytes, list[bytes | None]], data: st.DataObject
) -> None:
    """However the bytes are cut, the parser yields the same events, each with its exact raw bytes."""
    body, expected = stream
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=12)))
    parser = SSEParser()
    events = []
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        events.extend(parser.feed(body[start:end]))
    assert [event.data for event in events] == expected
    assert b"".join(event.raw for event in events) == body
    assert parser.pending == b""


def test_sse_parser_keeps_an_unfinished_event_pending() -> None:
    """A cut stream leaves its partial event in ``pending`` instead of inventing an event."""
    parser = SSEParser()
    assert parser.feed(b'data: {"a": 1}\n\ndata: {"b"') == [parser_event(b'data: {"a": 1}\n\n', b'{"a": 1}')]
    assert parser.pending == b'data: {"b"'


def parser_event(raw: bytes, data: bytes | None) -> Any:
    """An SSEEvent built by the parser itself (compares by value)."""
    (event,) = SSEParser().feed(raw)
    assert (event.raw, event.data) == (raw, data)
    return event


def fake_image(seed: str) -> str:
    """A small deterministic data URL standing in for a PNG."""
    return "data:image/png;base64," + pybase64.b64encode(seed.encode() * 40).decode()


@st.composite
def completions(draw: st.DrawFn) -> Completion:
    """Simulated answers: text, images or tool calls, 1..3 choices."""
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["gpt-4o-mini", "gemini-2.5-flash-image-preview"])),
        "messages": [{"role": "user", "content": draw(st.text(max_size=80))}],
        "n": draw(st.integers(1, 3)),
    }
    if draw(st.booleans()):
        body["tools"] = [
            {"type": "function", "function": {"name": draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))}}
        ]
    if draw(st.booleans()):
        body["max_tokens"] = draw(st.integers(1, 20))
    return build_completion(body, draw(st.integers(1, 10_000)), fake_image)


def assemble(chunks: list[dict[str, Any]], done: bool = True) -> StreamAssembler:
    """Feed chunks (round-tripped through JSON, as on the wire) into a fresh assembler."""
    assembler = StreamAssembler()
    for chunk in chunks:
        parsed = parse_chunk(orjson.dumps(chunk))
        assert parsed is not None
        assembler.add(parsed)
    assembler.done = done
    return assembler


@PROPERTY
@given(completions(), st.booleans())
def test_assembler_rebuilds_the_non_streamed_response(completion: Completion, include_usage: bool) -> None:
    """Assembling a stream gives the response the upstream would have sent without streaming."""
    assembler = assemble(list(completion.to_chunks(include_usage=include_usage)))
    expected = completion.to_response()
    if not include_usage:
        del expected["usage"]
    assert assembler.complete
    assert assembler.response() == expected


@PROPERTY
@given(completions(), st.randoms(use_true_random=False))
def test_assembler_handles_interleaved_choices(completion: Completion, rnd: Any) -> None:
    """Chunks of different choices may interleave; each choice keeps its own order and content."""
    chunks = list(completion.to_chunks(include_usage=True))
    usage = chunks.pop()
    queues: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        queues.setdefault(chunk["choices"][0]["index"], []).append(chunk)
    mixed = []
    while queues:
        index = rnd.choice(sorted(queues))
        mixed.append(queues[index].pop(0))
        if not queues[index]:
            del queues[index]
    assert assemble([*mixed, usage]).response() == completion.to_response()


@PROPERTY
@given(completions(), st.booleans())
def test_replay_reassembles_to_the_same_document(completion: Completion, include_usage: bool) -> None:
    """replay_chunks of a stored response re-assembles to it; the usage chunk only when asked."""
    doc = completion.to_response()
    chunks = list(replay_chunks(copy.deepcopy(doc), include_usage))
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk["id"] == doc["id"] and chunk["model"] == doc["model"] for chunk in chunks)
    usage_chunks = [chunk for chunk in chunks if not chunk["choices"]]
    assert len(usage_chunks) == (1 if include_usage else 0)
    expected = dict(doc)
    if not include_usage:
        del expected["usage"]
    assert assemble(chunks).response() == expected


def test_replay_carries_refusal_logprobs_and_fingerprint() -> None:
    """Refusals, logprobs and system_fingerprint survive replay and re-assembly."""
    logprobs = {"content": [{"token": "No", "logprob": -0.1, "bytes": [78, 111], "top_logprobs": []}]}
    doc = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 7,
        "model": "gpt-4o",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "No", "refusal": "I can't help with that."},
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    assert assemble(list(replay_chunks(copy.deepcopy(doc), True))).response() == doc


def test_assembler_is_incomplete_without_done_or_finish_reason() -> None:
    """Only a stream ended by [DONE] with a finish_reason on every choice is complete (storable)."""
    chunks = list(
        build_completion(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 1, fake_image
        ).to_chunks(include_usage=False)
    )
    assert not assemble(chunks, done=False).complete
    assert assemble(chunks).complete
    without_last_finish = chunks[:-1]
    assert not assemble(without_last_finish).complete
    assert not StreamAssembler().complete


def test_parse_chunk_ignores_done_and_junk() -> None:
    """[DONE], non-JSON keep-alives and non-object JSON are not chunks."""
    assert parse_chunk(b"[DONE]") is None
    assert parse_chunk(b" [DONE] ") is None
    assert parse_chunk(b"not json") is None
    assert parse_chunk(b"[1, 2]") is None
    assert parse_chunk(b'{"choices": []}') == {"choices": []}


def test_sse_frames_one_event() -> None:
    """sse() frames a payload as one data event."""
    assert sse(b"[DONE]") == b"data: [DONE]\n\n"
    (event,) = SSEParser().feed(sse(b'{"a":1}'))
    assert event.data == b'{"a":1}'
