"""A simulated Responses API answer as the `response` object and as its stream of SSE events.

Shapes as the openai SDK types them (`types/responses/response.py`, `response_output_message.py`,
`response_output_item.py` `ImageGenerationCall`, `response_usage.py`, `response_*_event.py`) and
OpenAI's reference ("Responses streaming events"). A stream is, with `sequence_number` counting
from 0:

    response.created, response.in_progress                       (status in_progress, no output)
    image tool only, output_index 0: response.output_item.added (image_generation_call),
      response.image_generation_call.in_progress, ….generating, ….partial_image x partial_images,
      ….completed, response.output_item.done (with `result`, the base64 PNG)
    the message: response.output_item.added, response.content_part.added, response.output_text.delta
      x n, response.output_text.done, response.content_part.done, response.output_item.done
    response.completed (or response.incomplete when cut at max_output_tokens)

which `client.responses.create(stream=True)` and `client.responses.stream()` accumulate without
error into the same `Response` the non-streamed call returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from proxy.sim.http import JSON

DELTA_CHARS = 16  # characters per streamed text delta


@dataclass(frozen=True, slots=True)
class ImageCall:
    """The image_generation tool's call: its PNG (base64), partial PNGs and settings."""

    id: str
    result: str
    partials: tuple[str, ...]
    revised_prompt: str
    settings: JSON  # background, output_format, quality, size

    def item(self, *, done: bool) -> JSON:
        """The `image_generation_call` output item, in progress (no result) or completed."""
        if not done:
            return {"id": self.id, "type": "image_generation_call", "status": "in_progress", "result": None}
        return {
            "id": self.id,
            "type": "image_generation_call",
            "status": "completed",
            "action": "generate",
            "result": self.result,
            "revised_prompt": self.revised_prompt,
            **self.settings,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """One whole answer; `echo` holds the request's settings the response object repeats."""

    id: str
    created_at: int
    message_id: str
    text: str
    complete: bool  # False: cut at max_output_tokens, status "incomplete"
    image: ImageCall | None
    usage: JSON
    tool_usage: JSON | None
    echo: JSON

    @property
    def status(self) -> str:
        """The final status: completed, or incomplete when cut short."""
        return "completed" if self.complete else "incomplete"

    def message(self, *, done: bool) -> JSON:
        """The assistant `message` output item (empty while in progress)."""
        content = [self.part()] if done else []
        status = self.status if done else "in_progress"
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def part(self, text: str | None = None) -> JSON:
        """An `output_text` content part (`logprobs` is `[]` unless asked for, as OpenAI sends it)."""
        return {
            "type": "output_text",
            "text": self.text if text is None else text,
            "annotations": [],
            "logprobs": [],
        }

    def output(self) -> list[JSON]:
        """The final `output`: the image call first (the model called the tool), then the text."""
        items = [] if self.image is None else [self.image.item(done=True)]
        return [*items, self.message(done=True)]

    def body(self, status: str | None = None) -> JSON:
        """The `response` object: final, or as first reported (`in_progress`, `queued`)."""
        final = status is None
        body: JSON = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status if final else status,
            "completed_at": self.created_at if final and self.complete else None,
            "error": None,
            "incomplete_details": None if self.complete or not final else {"reason": "max_output_tokens"},
            **self.echo,
            "output": self.output() if final else [],
            "usage": self.usage if final else None,
        }
        if final and self.tool_usage is not None:
            body["tool_usage"] = self.tool_usage
        return body

    def events(self) -> Iterator[JSON]:
        """The SSE events of the streamed answer, numbered."""
        for number, event in enumerate(self._events()):
            yield {**event, "sequence_number": number}

    def _events(self) -> Iterator[JSON]:
        yield {"type": "response.created", "response": self.body("in_progress")}
        yield {"type": "response.in_progress", "response": self.body("in_progress")}
        index = 0
        if self.image is not None:
            yield from self._image_events(self.image, index)
            index += 1
        at: JSON = {"item_id": self.message_id, "output_index": index}
        yield {"type": "response.output_item.added", "output_index": index, "item": self.message(done=False)}
        yield {"type": "response.content_part.added", **at, "content_index": 0, "part": self.part("")}
        for start in range(0, len(self.text), DELTA_CHARS):
            delta = self.text[start : start + DELTA_CHARS]
            yield {
                "type": "response.output_text.delta",
                **at,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            }
        yield {
            "type": "response.output_text.done",
            **at,
            "content_index": 0,
            "text": self.text,
            "logprobs": [],
        }
        yield {"type": "response.content_part.done", **at, "content_index": 0, "part": self.part()}
        yield {"type": "response.output_item.done", "output_index": index, "item": self.message(done=True)}
        yield {"type": f"response.{self.status}", "response": self.body()}

    @staticmethod
    def _image_events(image: ImageCall, index: int) -> Iterator[JSON]:
        at: JSON = {"item_id": image.id, "output_index": index}
        yield {"type": "response.output_item.added", "output_index": index, "item": image.item(done=False)}
        yield {"type": "response.image_generation_call.in_progress", **at}
        yield {"type": "response.image_generation_call.generating", **at}
        for number, partial in enumerate(image.partials):
            yield {
                "type": "response.image_generation_call.partial_image",
                **at,
                "partial_image_index": number,
                "partial_image_b64": partial,
                **image.settings,
            }
        yield {"type": "response.image_generation_call.completed", **at}
        yield {"type": "response.output_item.done", "output_index": index, "item": image.item(done=True)}
