"""``POST /v1/embeddings``, cached per input item (a ``BatchEndpoint``).

OpenAI "Create embeddings": ``input`` is a string, an array of strings, an array of token ids or an
array of token-id arrays (at most 2,048 items, none empty); ``encoding_format`` is ``float``
(default) or ``base64``; ``dimensions`` shortens text-embedding-3 vectors. Each item's vector
depends on the item and on every other field but ``user``, so that is an item's key; the answer
is taken apart and put together by ``endpoints.embedding_answer``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from proxy.cache.entry import BlobSlot
from proxy.cache.keys import IGNORED_FIELDS
from proxy.cache.replay import ReplayEvent
from proxy.endpoints.base import BatchAnswer, Parsed
from proxy.endpoints.chat import prompt_token_bound
from proxy.endpoints.embedding_answer import merged_answer, read_embeddings
from proxy.endpoints.fields import load_object
from proxy.errors import bad_request
from proxy.obs.usage import Demand, Usage
from proxy.upstream.relay import StreamFold

# OpenAI: "any array must be 2048 dimensions or less".
MAX_ITEMS = 2048
# Token ids of every OpenAI tokenizer are far below this; larger ones are refused, never forwarded.
MAX_TOKEN_ID = 2**32 - 1
ENCODINGS = ("float", "base64")
_INPUT_TYPES = "a string, an array of strings, an array of token ids or an array of token-id arrays"


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


def _check_tokens(tokens: list[Any], where: str) -> None:
    if not tokens:
        raise bad_request(f"'{where}' must not be an empty array.", param="input")
    if not all(map(_is_token, tokens)):
        raise bad_request(
            f"Invalid '{where}': token ids are integers from 0 to {MAX_TOKEN_ID}.", param="input"
        )


def input_items(value: object) -> list[Any]:
    """The items of ``input`` in order, or a 400 saying what is wrong with it."""
    if isinstance(value, str):
        if not value:
            raise bad_request("'input' must not be an empty string.", param="input")
        return [value]
    if not isinstance(value, list):
        raise bad_request(f"Invalid type for 'input': expected {_INPUT_TYPES}.", param="input")
    if not value:
        raise bad_request("'input' must not be empty.", param="input")
    first = value[0]
    if isinstance(first, int) and not isinstance(first, bool):
        _check_tokens(value, "input")
        return [value]  # one token array
    if len(value) > MAX_ITEMS:
        raise bad_request(f"'input' may hold at most {MAX_ITEMS} items, got {len(value)}.", param="input")
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if isinstance(first, str) and isinstance(item, str):
            if not item:
                raise bad_request(f"'{where}' must not be an empty string.", param="input")
        elif isinstance(first, list) and isinstance(item, list):
            _check_tokens(item, where)
        else:
            raise bad_request(
                f"Invalid type for '{where}': every item must be of one kind, {_INPUT_TYPES}.", param="input"
            )
    return value


def parse_embeddings_body(raw: bytes) -> dict[str, Any]:
    """The request object, or a 400 saying exactly what is wrong with it (nothing is forwarded)."""
    body = load_object(raw)
    for name in ("model", "input"):
        if body.get(name) is None:
            raise bad_request(f"Missing required parameter: '{name}'.", param=name)
    if not isinstance(body["model"], str) or not body["model"]:
        raise bad_request("'model' must be a non-empty string.", param="model")
    input_items(body["input"])
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise bad_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and not (_is_token(dimensions) and dimensions > 0):
        raise bad_request("'dimensions' must be a positive integer.", param="dimensions")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise bad_request("Invalid type for 'user': expected a string.", param="user")
    return body


# Native vector sizes (OpenAI embeddings guide); another model is assumed as large as the largest.
NATIVE_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
LARGEST_DIMENSIONS = 3072
# Answer bytes per vector value: base64 of a float32 is 16/3; a float's text with its separator
# and the indentation OpenAI sends (`\n      -0.0070265634,`) stays under 25.
BASE64_BYTES_PER_VALUE = 16 / 3
FLOAT_BYTES_PER_VALUE = 25
ITEM_OVERHEAD_BYTES = 128  # {"object": "embedding", "index": 2047, "embedding": ...}


def item_token_bound(item: Any) -> int:
    """Tokens one item can bill: a token array its length, a string chat's conservative bound."""
    if isinstance(item, str):
        return max(1, prompt_token_bound(item.encode(), 0))
    return len(item)


class Embeddings:
    """The embeddings API, one cache entry per input item (``proxy.pipeline.batch`` serves it)."""

    name = "embeddings"
    method = "POST"
    route = "/v1/embeddings"
    upstream_path = "/embeddings"
    key_scope = "embeddings"

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        """Validate the JSON body (400s); embeddings are never streamed."""
        body = parse_embeddings_body(raw)
        return Parsed(raw, body, body["model"])

    def key_fields(self, parsed: Parsed) -> Mapping[str, Any]:
        """The whole request: what identical concurrent requests share a flight by."""
        return parsed.body

    def demand(self, parsed: Parsed) -> Demand:
        """The tokens the request's items can bill; there is no completion to bound."""
        tokens = sum(item_token_bound(item) for item in self.split(parsed))
        return Demand(prompt_tokens=tokens, boundable=False)

    def forward_body(self, parsed: Parsed, bound: Mapping[str, int]) -> bytes:
        """The body as it is (a ``subset`` built it when only some items go upstream)."""
        return parsed.raw

    def complete(self, doc: Any) -> bool:
        """A list answer with data (``read_answer`` checks every item)."""
        return isinstance(doc, dict) and isinstance(doc.get("data"), list) and bool(doc["data"])

    def cut_short(self, doc: Mapping[str, Any]) -> bool:
        """An embedding is never cut by a completion limit."""
        return False

    def fold(self, parsed: Parsed) -> StreamFold:
        """Never asked: ``parse`` never marks an embeddings request as streamed."""
        raise TypeError("the embeddings API does not stream")

    def blob_slots(self, doc: Mapping[str, Any]) -> list[BlobSlot]:
        """None: item answers are a few KB and stay inline (``cache.items``)."""
        return []

    def replay(self, doc: Mapping[str, Any], usage_asked: bool) -> Iterator[ReplayEvent]:
        """Nothing to replay: never streamed."""
        return iter(())

    def usage(self, parsed: Parsed, usage: Mapping[str, Any] | None, doc: Mapping[str, Any] | None) -> Usage:
        """Input tokens only (``usage.prompt_tokens``)."""
        return Usage.from_mapping(usage)

    def split(self, parsed: Parsed) -> list[Any]:
        """One item per string or token array of ``input``."""
        return input_items(parsed.body["input"])

    def item_key_fields(self, parsed: Parsed, item: Any) -> Mapping[str, Any]:
        """The item and every other field but the ignored ones, ``encoding_format`` defaulted, so a
        ``float`` hit never serves ``base64`` and a ``dimensions=256`` hit never a full vector."""
        params = {k: v for k, v in parsed.body.items() if k != "input" and k not in IGNORED_FIELDS}
        params["encoding_format"] = parsed.body.get("encoding_format") or "float"
        return {"item": item, "params": params}

    def subset(self, parsed: Parsed, items: Sequence[Any]) -> Parsed:
        """The request with ``input`` replaced by ``items`` (always a list: valid for both kinds)."""
        body = {**parsed.body, "input": list(items)}
        return Parsed(orjson.dumps(body), body, parsed.model)

    def answer_bound(self, sub: Parsed) -> int:
        """Items times the largest vector the model, ``dimensions`` and encoding can give."""
        model = sub.model.lower().rsplit("/", 1)[-1]  # LLMGateway names them "openai/..."
        dimensions = sub.body.get("dimensions") or NATIVE_DIMENSIONS.get(model, LARGEST_DIMENSIONS)
        base64 = sub.body.get("encoding_format") == "base64"
        per_value = BASE64_BYTES_PER_VALUE if base64 else FLOAT_BYTES_PER_VALUE
        return len(self.split(sub)) * (math.ceil(dimensions * per_value) + ITEM_OVERHEAD_BYTES) + 1024

    def read_answer(self, sub: Parsed, raw: bytes) -> BatchAnswer:
        """See ``embedding_answer.read_embeddings``; tokens apportioned by each item's bound."""
        items = self.split(sub)
        return read_embeddings(raw, len(items), [item_token_bound(item) for item in items])

    def merge(self, values: Sequence[bytes], model: str, usage: Usage) -> bytes:
        """A ``CreateEmbeddingResponse``: ``usage`` counts the tokens billed for this request only."""
        return merged_answer(values, model, usage.prompt_tokens)
