"""Request bodies the scenarios send and the checks that a response carries the expected content."""

from __future__ import annotations

from typing import Any

import orjson
import pybase64

from proxy.sim.payloads import png_data_url

BEARER = "sk-bench-000000000000"
HEADERS = {"Authorization": f"Bearer {BEARER}", "Content-Type": "application/json"}
IMAGE_MODEL = "gemini-2.5-flash-image-preview"
TEXT_MODEL = "gpt-4o-mini"
IMAGES_PATH = "/v1/images/generations"
IMAGES_MODEL = "gpt-image-1"  # OpenAI-shaped answers: b64_json and token usage
# Replaced by a per-request counter in unique-prompt (miss) load; see bench.load.
UNIQUE_MARK = "__N__"


def chat_body(model: str, prompt: str, *, stream: bool = False) -> bytes:
    """A chat request as a typical SDK sends it."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def vision_body(model: str, instruction: str, image_bytes: int) -> bytes:
    """The seed's edit workflow: a generated PNG sent back inside ``messages`` with an instruction.

    LLMGateway's docs: "edit or modify images by ... including the image in the messages array"
    (an OpenAI ``image_url`` content part carrying a ``data:image/png;base64,...`` URL).
    """
    body = {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": instruction},
                    {"type": "image_url", "image_url": {"url": png_data_url(instruction, image_bytes)}},
                ],
            }
        ],
        "temperature": 0,
    }
    return orjson.dumps(body)


def images_body(prompt: str) -> bytes:
    """An Images API request as ``client.images.generate(model=..., prompt=...)`` sends it."""
    return orjson.dumps({"model": IMAGES_MODEL, "prompt": prompt, "n": 1})


def b64_of(raw: bytes) -> str:
    """The first ``data[].b64_json`` of an Images API answer ('' when there is none)."""
    data = orjson.loads(raw).get("data") or ()
    return str(data[0].get("b64_json") or "") if data else ""


def image_url_of(raw: bytes) -> str:
    """The first image data URL of a non-streamed response ('' when there is none)."""
    doc = orjson.loads(raw)
    for choice in doc.get("choices") or ():
        for image in (choice.get("message") or {}).get("images") or ():
            return str(image["image_url"]["url"])
    return ""


def content_of(raw: bytes) -> str:
    """The first choice's text of a non-streamed response ('' for an Images API answer)."""
    choices = orjson.loads(raw).get("choices") or ()
    return str(choices[0]["message"].get("content") or "") if choices else ""


def sse_events(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    events: list[bytes] = []
    for block in raw.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                events.append(line[6:])
    return events


def sse_summary(raw: bytes) -> tuple[str, str, bool]:
    """(text, first image URL, ended with [DONE]) of a replayed stream."""
    events = sse_events(raw)
    text: list[str] = []
    image = ""
    for event in events:
        if event == b"[DONE]":
            continue
        for choice in orjson.loads(event).get("choices") or ():
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or "")
            for part in delta.get("images") or ():
                image = image or str(part["image_url"]["url"])
    return "".join(text), image, bool(events) and events[-1] == b"[DONE]"


def png_size(data_url: str) -> int:
    """Decoded byte size of a ``data:image/png;base64,...`` URL."""
    return len(pybase64.b64decode(data_url.partition(",")[2]))
