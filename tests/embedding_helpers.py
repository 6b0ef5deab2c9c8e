"""Helpers for the embeddings tests: one SDK call with its headers and raw bytes, item bytes."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

import openai
from openai.types import CreateEmbeddingResponse

from proxy.endpoints.embedding_answer import read_embeddings
from tests.fake_upstream import FakeUpstream

SMALL = "text-embedding-3-small"


@dataclass(frozen=True, slots=True)
class Embedded:
    """One ``embeddings.create`` as the SDK parsed it, plus what came over the wire."""

    answer: CreateEmbeddingResponse
    headers: dict[str, str]
    raw: bytes

    @property
    def cache(self) -> tuple[str | None, str | None]:
        """``(X-Cache, X-Cache-Items)``."""
        return self.headers.get("x-cache"), self.headers.get("x-cache-items")

    def vectors(self) -> list[Any]:
        """Each embedding in order, after checking the indices are 0..n-1 and the objects right."""
        assert self.answer.object == "list"
        assert [item.index for item in self.answer.data] == list(range(len(self.answer.data)))
        assert all(item.object == "embedding" for item in self.answer.data)
        return [item.embedding for item in self.answer.data]

    def item_bytes(self) -> tuple[bytes, ...]:
        """Each embedding's JSON value exactly as it is in the body."""
        count = len(self.answer.data)
        return read_embeddings(self.raw, count, [1] * count).values


async def embed(client: openai.AsyncOpenAI, **params: Any) -> Embedded:
    """``client.embeddings.create(**params)`` with its raw response kept."""
    reply = await client.embeddings.with_raw_response.create(**params)
    return Embedded(reply.parse(), {k.lower(): v for k, v in reply.headers.items()}, reply.content)


def floats(embedding: list[float] | str) -> list[float]:
    """An embedding's values: a base64 one (the SDK leaves it encoded when asked for explicitly)
    decoded as little-endian float32, as OpenAI sends it."""
    if isinstance(embedding, list):
        return embedding
    packed = base64.b64decode(embedding, validate=True)
    return list(struct.unpack(f"<{len(packed) // 4}f", packed))


def direct_client(upstream: FakeUpstream) -> openai.AsyncOpenAI:
    """The SDK aimed at the simulator itself: what a fresh, uncached answer looks like."""
    return openai.AsyncOpenAI(base_url=upstream.url, api_key="sk-direct", max_retries=0, timeout=30)


def sent_inputs(upstream: FakeUpstream) -> list[Any]:
    """The ``input`` of every embeddings request the upstream received, in order."""
    return [body["input"] for body in upstream.state.requests["embeddings"]]
