"""The simulated `POST /v1/embeddings`: one deterministic unit vector per input item.

Request and answer as the openai SDK types them (`types/embedding_create_params.py`,
`create_embedding_response.py`): `input` is a string, a list of strings, a list of token ids or
a list of token-id lists; `encoding_format` `float` (default) or `base64` (the float32 values,
little-endian, base64-encoded, as OpenAI and LLMGateway send them and the SDK decodes them);
`dimensions` (text-embedding-3 only) truncates the model's vector and renormalises it.

Each embedding is a pure function of (model, input item, dimensions), so a proxy that caches per
item can be checked exactly: the same item gives the same vector in any batch, at any position.
The simulator does not tokenise, so a string and its token ids give different vectors.
Validation follows OpenAI: a malformed `input` (empty, an empty string, wrong types, more than
2,048 items) gets its opaque `'$.input' is invalid` 400 (openai/openai-python#576), a too-long
item or batch its context-length errors, an unknown model a 404.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from typing import TYPE_CHECKING

import orjson
import pybase64
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.sim.http import JSON, InvalidRequest, answer_delay, count_tokens, json_response, route
from proxy.sim.params import SHOWN_CHARS, bounded_int, choice, missing, typed

if TYPE_CHECKING:
    from proxy.sim.simulator import SimulatorState

# Native vector sizes (OpenAI embeddings guide); only text-embedding-3 takes `dimensions`.
DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
MAX_ITEMS = 2048
MAX_ITEM_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
_INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
)

Item = str | list[int]


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def input_items(value: object) -> list[Item]:
    """The items of `input` in order, or the 400 OpenAI gives any other shape."""
    items: list[object]
    if isinstance(value, str) or (isinstance(value, list) and value and all(map(_is_token, value))):
        items = [value]  # one string, or one token array
    elif isinstance(value, list):
        items = value
    else:
        items = []
    strings = [item for item in items if isinstance(item, str) and item]
    arrays = [item for item in items if isinstance(item, list) and item and all(map(_is_token, item))]
    # One kind throughout: strings or token arrays, none of them empty.
    if not 0 < len(items) <= MAX_ITEMS or len(items) not in (len(strings), len(arrays)):
        raise InvalidRequest(_INVALID_INPUT)
    return [*strings, *arrays]


def item_tokens(item: Item) -> int:
    """Tokens one item bills: the simulator's count for text, the array length for token ids."""
    return count_tokens(item) if isinstance(item, str) else len(item)


def embedding(model: str, item: Item, dimensions: int, native: int) -> list[float]:
    """The unit vector of `item`: the model's native vector, cut to `dimensions`, renormalised.

    Values are float32 numbers, so the `float` and `base64` encodings carry the same values.
    """
    seed = hashlib.sha256(model.encode() + b"\0" + orjson.dumps(item)).digest()
    raw = random.Random(seed).randbytes(2 * native)  # noqa: S311 - not crypto
    values = struct.unpack(f"<{dimensions}h", raw[: 2 * dimensions])
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def encode_base64(vector: list[float]) -> str:
    """`encoding_format: "base64"`: little-endian float32 bytes, base64-encoded."""
    return pybase64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _model(body: JSON) -> tuple[str, int]:
    if body.get("model") is None:
        raise missing("model")
    typed(body, "model", str, "a string")
    model = str(body["model"])
    native = DIMENSIONS.get(model)
    if native is None:
        raise InvalidRequest(
            f"The model `{model[:SHOWN_CHARS]}` does not exist or you do not have access to it.",
            code="model_not_found",
            status=404,
        )
    return model, native


def _dimensions(body: JSON, model: str, native: int) -> int:
    if body.get("dimensions") is not None and not model.startswith("text-embedding-3"):
        raise InvalidRequest("This model does not support specifying dimensions.", param="dimensions")
    return bounded_int(body, "dimensions", 1, native, native)


def embeddings_body(body: JSON) -> JSON:
    """The `CreateEmbeddingResponse` for a request body, or its 400."""
    model, native = _model(body)
    if "input" not in body:
        raise missing("input")
    items = input_items(body["input"])
    dimensions = _dimensions(body, model, native)
    encoding = choice(body, "encoding_format", ("float", "base64"), "float")
    typed(body, "user", str, "a string")
    counts = [item_tokens(item) for item in items]
    if (longest := max(counts)) > MAX_ITEM_TOKENS:
        raise InvalidRequest(
            f"This model's maximum context length is {MAX_ITEM_TOKENS} tokens, however you requested "
            f"{longest} tokens ({longest} in your prompt; 0 for the completion). "
            "Please reduce your prompt; or completion length.",
            code="context_length_exceeded",
        )
    if (total := sum(counts)) > MAX_REQUEST_TOKENS:
        raise InvalidRequest(
            f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
            type_="max_tokens_per_request",
            code="max_tokens_per_request",
        )
    data = []
    for index, item in enumerate(items):
        vector = embedding(model, item, dimensions, native)
        encoded = encode_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = {"prompt_tokens": total, "total_tokens": total}
    return {"object": "list", "data": data, "model": model, "usage": usage}


async def _embed(request: web.Request, state: SimulatorState, body: JSON) -> web.StreamResponse:
    answer = embeddings_body(body)
    if (failure := await answer_delay(state, image=False)) is not None:
        return failure
    return json_response(answer)


def embeddings_route(state: SimulatorState) -> Handler:
    """`POST /v1/embeddings`, counted as `calls["embeddings"]`."""
    return route(state, "embeddings", _embed)
