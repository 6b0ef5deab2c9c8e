"""Helpers for the Images API tests: requests to the proxy, raw multipart forms, event streams."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from tests.e2e_helpers import API_KEY, JSON, RawReply, send_raw
from tests.fake_upstream import assert_valid_png
from tests.proxy_harness import ProxyServer

GPT_IMAGE = "gpt-image-1"  # OpenAI-shaped answers with token usage (the simulator's)
GATEWAY_IMAGE = "gemini-2.5-flash-image-preview"  # LLMGateway-shaped answers: no usage
SMALL_PNG = 20_000  # bytes of the simulator's images in these tests: above the blob threshold


def pngs(answer: Mapping[str, Any]) -> list[bytes]:
    """The decoded, structurally checked PNGs of an ``ImagesResponse``."""
    out = []
    for image in answer["data"]:
        png = base64.b64decode(image["b64_json"], validate=True)
        assert_valid_png(png)
        out.append(png)
    return out


async def generate_raw(proxy: ProxyServer, body: bytes | JSON, **kwargs: Any) -> RawReply:
    """``POST /v1/images/generations`` with a raw body."""
    return await send_raw(f"{proxy.url}/images/generations", body, **kwargs)


async def edit_raw(
    proxy: ProxyServer, body: bytes, content_type: str, *, api_key: str | None = API_KEY
) -> RawReply:
    """``POST /v1/images/edits`` with exactly ``body`` and ``content_type``."""
    return await send_raw(
        f"{proxy.url}/images/edits", body, headers={"Content-Type": content_type}, api_key=api_key
    )


def multipart(
    boundary: str, fields: Sequence[tuple[str, str]], files: Sequence[tuple[str, str, bytes, str]]
) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) in exactly the given order; files are (field,
    filename, bytes, content type) and come after the text fields unless ``fields`` is empty."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ]
    parts += [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: {media}\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, filename, data, media in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def named_events(raw: bytes) -> list[tuple[str | None, JSON]]:
    """``(event name, data object)`` of every event of a complete SSE body."""
    assert raw.endswith(b"\n\n"), raw[-200:]
    events = []
    for block in raw[:-2].split(b"\n\n"):
        name = None
        data = b""
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[len(b"event: ") :].decode()
            elif line.startswith(b"data: "):
                data += line[len(b"data: ") :]
        events.append((name, orjson.loads(data)))
    return events
