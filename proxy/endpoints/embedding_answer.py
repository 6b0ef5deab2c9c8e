"""An embeddings answer taken apart per item, and put together again, without re-encoding a float.

A cached embedding must come back byte for byte as the upstream first wrote it: a float's text is
not unique (``0.1``, ``1e-1``, ``0.10``) and re-serialising a parsed vector could change it. So the
answer is walked with the standard library's JSON scanner, which says where each value ends: the
``embedding`` of every ``data`` item is kept as the exact bytes it spans. The walk is hand-written
(objects, arrays, separators; ~40 lines) because no well-kept parser reports value offsets; the
values inside it are read by ``json``'s own C scanner, except float vectors (most of the bytes):
a flat array of numbers ends at its first ``]`` and is checked in C (``_is_float_vector``). It runs
on misses only; a hit splices bytes.

Answer shape: OpenAI "Create embeddings" (``CreateEmbeddingResponse``): ``object: "list"``,
``data[]`` of ``{"object": "embedding", "index", "embedding"}``, ``model``, ``usage``
(``prompt_tokens``, ``total_tokens``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from proxy.endpoints.base import BatchAnswer


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


# NaN/Infinity are not JSON (RFC 8259 §6): an answer holding them is refused, never stored.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _expect(text: str, pos: int, char: str) -> int:
    if not text.startswith(char, pos):
        raise ValueError(f"expected {char!r} at {pos}")
    return _skip(text, pos + 1)


def _value(text: str, pos: int) -> tuple[Any, int]:
    """The JSON value at ``pos`` and where it ends (json's C scanner)."""
    return _DECODER.raw_decode(text, pos)


def _walk(text: str, pos: int, close: str, member: Callable[[str | None, int], int]) -> int:
    """Walk the object (``close == "}"``) or array (``"]"``) opening at ``pos``: ``member(key, at)``
    reads the value at ``at`` (key None in an array) and returns where it ends. Returns the end."""
    pos = _skip(text, pos + 1)
    if text.startswith(close, pos):
        return pos + 1
    while True:
        key = None
        if close == "}":
            if not text.startswith('"', pos):
                raise ValueError(f"expected a key at {pos}")
            key, pos = _value(text, pos)
            pos = _expect(text, _skip(text, pos), ":")
        pos = _skip(text, member(key, pos))
        if text.startswith(close, pos):
            return pos + 1
        pos = _expect(text, pos, ",")


def _spans(text: str) -> tuple[dict[str, Any], list[tuple[Any, int, int]]]:
    """Top-level members other than ``data``, and per ``data`` item its ``index`` and the span of
    its ``embedding`` (checked to be a vector), in document order; a key given twice counts once,
    the last, as in ``json``."""
    top: dict[str, Any] = {}
    items: list[tuple[Any, int, int]] = []

    def item(_key: str | None, at: int) -> int:
        if not text.startswith("{", at):
            raise ValueError("a data item is not an object")
        found: dict[str, Any] = {}

        def field(key: str | None, pos: int) -> int:
            if key != "embedding":
                found[key or ""], end = _value(text, pos)
                return end
            if text.startswith("[", pos):
                end = text.index("]", pos) + 1
                if not _is_float_vector(text[pos:end]):
                    raise ValueError("an embedding is not a vector")
            else:
                value, end = _value(text, pos)
                if not (isinstance(value, str) and value):
                    raise ValueError("an embedding is not a vector")
            found[key] = (pos, end)
            return end

        end = _walk(text, at, "}", field)
        if "embedding" not in found:
            raise ValueError("a data item has no embedding")
        items.append((found.get("index"), *found["embedding"]))
        return end

    def member(key: str | None, at: int) -> int:
        if key == "data":
            if not text.startswith("[", at):
                raise ValueError("data is not an array")
            items.clear()
            return _walk(text, at, "]", item)
        top[key or ""], end = _value(text, at)
        return end

    start = _skip(text, 0)
    if not text.startswith("{", start):
        raise ValueError("the answer is not an object")
    if _skip(text, _walk(text, start, "}", member)) != len(text):
        raise ValueError("data after the answer")
    return top, items


_NUMBER_CHARS = b"0123456789+-.eE,[] \t\n\r"


def _is_float_vector(span: str) -> bool:
    """A non-empty JSON array of numbers, given as the text from its ``[`` to its first ``]``.

    Number characters only (no string, literal or nested array fits in them) and valid JSON: two
    C-speed passes; checking 1,536 parsed values one by one in Python costs ten times more.
    """
    data = span.encode("ascii")  # UnicodeEncodeError is a ValueError
    return not data.translate(None, _NUMBER_CHARS) and bool(orjson.loads(data))


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders; the shares sum to ``total``)."""
    if not weights:
        return []
    weights = [max(w, 0) for w in weights]
    whole = sum(weights)
    if whole == 0:
        weights, whole = [1] * len(weights), len(weights)
    shares = [total * w // whole for w in weights]
    order = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for index in order[: total - sum(shares)]:
        shares[index] += 1
    return shares


def read_embeddings(raw: bytes, count: int, weights: Sequence[int]) -> BatchAnswer:
    """The ``count`` embeddings of an answer in input order (by their ``index``), as the exact bytes
    sent, with the billed tokens apportioned by ``weights`` (ValueError: not such an answer)."""
    text = raw.decode()  # UnicodeDecodeError is a ValueError
    top, items = _spans(text)
    indices = [index for index, _, _ in items]
    if sorted(i for i in indices if isinstance(i, int) and not isinstance(i, bool)) != list(range(count)):
        raise ValueError(f"the answer's data indices are not 0..{count - 1}")
    values: list[bytes] = [b""] * count
    ascii_only = raw.isascii()  # then characters are bytes: slice the bytes themselves
    for index, start, end in items:
        values[index] = raw[start:end] if ascii_only else text[start:end].encode()
    usage = top.get("usage") if isinstance(top.get("usage"), dict) else None
    model = top.get("model")
    billed = (usage or {}).get("prompt_tokens")
    total = (
        billed if isinstance(billed, int) and not isinstance(billed, bool) and billed > 0 else sum(weights)
    )
    tokens = [total] if count == 1 else apportion(total, weights)
    return BatchAnswer(model if isinstance(model, str) else "", tuple(values), tuple(tokens), usage)


def merged_answer(values: Sequence[bytes], model: str, tokens: int) -> bytes:
    """A ``CreateEmbeddingResponse`` around item answers given as bytes: nothing is parsed."""
    data = b",".join(
        b'{"object":"embedding","index":%d,"embedding":%b}' % (index, value)
        for index, value in enumerate(values)
    )
    usage = b'{"prompt_tokens":%d,"total_tokens":%d}' % (tokens, tokens)
    return b'{"object":"list","data":[%b],"model":%b,"usage":%b}' % (data, orjson.dumps(model), usage)
