"""Helpers for the end-to-end tests: openai SDK clients aimed at the proxy, raw HTTP and SSE reading."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import openai
import orjson
import redis.asyncio as aioredis
from multidict import CIMultiDictProxy
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from tests.proxy_harness import ProxyServer

API_KEY = "sk-e2e-test-key"
TEXT_MODEL = "gpt-4o-mini"
IMAGE_MODEL = "gemini-2.5-flash-image-preview"
SMALL_IMAGE = 300_000  # where full size is not the point: fast to generate, copy and store
JSON = dict[str, Any]


def user(text: str) -> list[ChatCompletionMessageParam]:
    """A one-message conversation."""
    return [{"role": "user", "content": text}]


def sync_client(proxy: ProxyServer, api_key: str = API_KEY) -> openai.OpenAI:
    """The sync SDK client with the proxy as ``base_url`` and no retries (every call counts)."""
    return openai.OpenAI(base_url=proxy.url, api_key=api_key, max_retries=0, timeout=30)


def async_client(proxy: ProxyServer, api_key: str = API_KEY) -> openai.AsyncOpenAI:
    """The async SDK client with the proxy as ``base_url`` and no retries."""
    return openai.AsyncOpenAI(base_url=proxy.url, api_key=api_key, max_retries=0, timeout=30)


@dataclass(frozen=True, slots=True)
class RawReply:
    """One HTTP exchange seen from the wire."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


async def send_raw(
    url: str,
    body: bytes | Mapping[str, Any] | None = None,
    *,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    api_key: str | None = API_KEY,
) -> RawReply:
    """Send exactly ``body`` (bytes as given, a mapping as JSON) and read the whole answer."""
    sent: dict[str, str] = {"Content-Type": "application/json"}
    if api_key is not None:
        sent["Authorization"] = f"Bearer {api_key}"
    sent.update(headers or {})
    data = orjson.dumps(body) if isinstance(body, Mapping) else body
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url, data=data, headers=sent) as response,
    ):
        return RawReply(response.status, response.headers, await response.read())


async def chat_raw(proxy: ProxyServer, body: bytes | Mapping[str, Any], **kwargs: Any) -> RawReply:
    """``POST /v1/chat/completions`` on the proxy with a raw body."""
    return await send_raw(f"{proxy.url}/chat/completions", body, **kwargs)


def chat_body(text: str, model: str = TEXT_MODEL, **extra: Any) -> JSON:
    """A chat request body as a plain dict."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def sse_data(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of a complete SSE body, in order (every event must be data-only)."""
    assert raw.endswith(b"\n\n"), raw[-200:]
    events = raw[:-2].split(b"\n\n")
    assert all(event.startswith(b"data: ") for event in events), events[:3]
    return [event[len(b"data: ") :] for event in events]


def sse_chunks(raw: bytes) -> list[JSON]:
    """The JSON chunks of an SSE body, ``[DONE]`` excluded."""
    return [orjson.loads(data) for data in sse_data(raw) if data != b"[DONE]"]


def message_images(completion: ChatCompletion, index: int = 0) -> list[str]:
    """Image data URLs of a non-streamed answer (``message.images``, an LLMGateway extension)."""
    extra = completion.choices[index].message.model_extra or {}
    return [image["image_url"]["url"] for image in extra.get("images") or ()]


@dataclass(slots=True)
class StreamSummary:
    """A streamed answer as the SDK user sees it, folded back together."""

    content: str = ""
    images: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tool_calls: dict[int, JSON] = field(default_factory=dict)
    usage: list[JSON] = field(default_factory=list)
    chunks: int = 0


def summarize(chunks: Iterable[ChatCompletionChunk]) -> StreamSummary:
    """Fold SDK chunks into content, images, tool calls, finish_reason and usage chunks."""
    summary = StreamSummary()
    for chunk in chunks:
        summary.chunks += 1
        if chunk.usage is not None:
            summary.usage.append(chunk.usage.model_dump())
        for choice in chunk.choices:
            delta = choice.delta
            summary.content += delta.content or ""
            for image in (delta.model_extra or {}).get("images") or ():
                summary.images.append(image["image_url"]["url"])
            for call in delta.tool_calls or ():
                slot = summary.tool_calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
            if choice.finish_reason:
                summary.finish_reason = choice.finish_reason
    return summary


async def redis_keys(client: aioredis.Redis, pattern: str) -> list[bytes]:
    """Keys matching ``pattern`` (SCAN, never KEYS)."""
    return [key async for key in client.scan_iter(match=pattern, count=1000)]


async def entry_key_of(client: aioredis.Redis, prefix: str, digest: str, wait_s: float = 10.0) -> bytes:
    """The Redis key of the entry whose hash is ``digest`` (the ``X-Cache-Key`` header).

    A miss is stored in the background after the client has its answer, blobs first and the entry
    last: this waits (bounded) for the entry, and once it exists its blobs are complete too.
    """
    deadline = asyncio.get_running_loop().time() + wait_s
    keys = await redis_keys(client, f"{prefix}:r1:*{digest}")
    while not keys and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
        keys = await redis_keys(client, f"{prefix}:r1:*{digest}")
    assert len(keys) == 1, keys
    return keys[0]
