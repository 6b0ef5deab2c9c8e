"""The simulated Images API: `POST /v1/images/generations` and the answer edits share.

Shapes as the openai SDK types them (`types/images_response.py`, `image_gen_partial_image_event.py`,
`image_gen_completed_event.py`, `image_edit_*_event.py`) and OpenAI's reference ("Create image",
"Image streaming": `event: image_generation.partial_image` ... `image_generation.completed`, no
`[DONE]`). GPT image models (`gpt-image-*`) answer as OpenAI does: `background`, `output_format`,
`quality`, `size` and token `usage` beside `data` (usage switchable off with
`state.images_usage`, for "priced per image" paths). Other image models answer as LLMGateway's
images route does (theopenco/llmgateway `apps/gateway/src/images/images.ts`): `created` and
`data` of `b64_json` + `revised_prompt`, no usage. Like that route, only `b64_json` is served:
`response_format: "url"` is refused with 400. Images are the simulator's deterministic PNGs,
seeded by every field that shapes the picture, so an identical request gets identical bytes.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
import pybase64
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.sim.http import (
    JSON,
    InvalidRequest,
    answer_delay,
    count_tokens,
    json_response,
    route,
    write_events,
)
from proxy.sim.params import SHOWN_CHARS, bounded_int, choice, missing, typed
from proxy.sim.payloads import is_image_model
from proxy.sim.png import make_png

if TYPE_CHECKING:
    from proxy.sim.simulator import SimulatorState

DEFAULT_MODEL = "gpt-image-1"
MAX_IMAGES = 10  # `n`, OpenAI and LLMGateway alike
MAX_PARTIAL_IMAGES = 3
MAX_PROMPT_CHARS = 32_000
# gpt-image-1's output tokens per 1024x1024 image by quality (OpenAI image generation guide,
# "Cost and latency"); other sizes scale with their area.
OUTPUT_TOKENS_1024 = {"low": 272, "medium": 1056, "high": 4160}
# What `auto` and the legacy DALL-E values resolve to (LLMGateway's normalizeQuality does the same).
_QUALITY = {"auto": "medium", "standard": "medium", "hd": "high", "xhigh": "high", "max": "high"}
_QUALITIES = ("auto", "low", "medium", "high", "xhigh", "max", "standard", "hd")
# An input image (an edit's upload, a Responses input_image) in the simulator's token count:
# gpt-4o's 1024x1024 high-detail figure, 85 + 4 tiles x 170 (OpenAI vision guide).
INPUT_IMAGE_TOKENS = 765
_SIZE = re.compile(r"(\d{2,4})x(\d{2,4})")
_SIZE_BOUNDS = (256, 3840)


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """A validated generation or edit: resolved options and the seed of its pictures."""

    kind: str  # "image_generation" or "image_edit", the prefix of its stream events
    model: str
    prompt: str
    n: int
    size: str
    quality: str
    background: str
    output_format: str
    stream: bool
    partial_images: int
    digest: str
    input_images: int = 0

    @property
    def openai_shaped(self) -> bool:
        """GPT image models answer with OpenAI's fields; others with LLMGateway's."""
        return self.model.startswith("gpt-image")

    def settings(self) -> JSON:
        """The resolved settings OpenAI reports beside the images and in stream events."""
        return {
            "background": self.background,
            "output_format": self.output_format,
            "quality": self.quality,
            "size": self.size,
        }

    def usage(self) -> JSON:
        """The answer's token usage: prompt and uploads in, `n` images out."""
        output = self.n * image_output_tokens(self.quality, self.size)
        return image_usage(self.prompt, self.input_images, output)

    def seed(self, index: int) -> str:
        """The PNG seed of image `index`."""
        return f"{self.kind}|{self.model}|{self.digest}|{index}"


def _prompt(values: Mapping[str, object]) -> str:
    prompt = values.get("prompt")
    if prompt is None:
        raise missing("prompt")
    typed(values, "prompt", str, "a string")
    if not 0 < len(str(prompt)) <= MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"Invalid 'prompt': string length must be between 1 and {MAX_PROMPT_CHARS} characters.",
            param="prompt",
            code="invalid_value",
        )
    return str(prompt)


def image_size(values: Mapping[str, object]) -> str:
    """`size` validated, `auto` resolved to 1024x1024."""
    size = values.get("size")
    if size is None or size == "auto":
        return "1024x1024"
    match = _SIZE.fullmatch(size) if isinstance(size, str) else None
    if match is None or not all(_SIZE_BOUNDS[0] <= int(side) <= _SIZE_BOUNDS[1] for side in match.groups()):
        raise InvalidRequest(
            f"Invalid value: '{str(size)[:SHOWN_CHARS]}'. Supported values are: 'auto' or "
            f"'WIDTHxHEIGHT' with each side between {_SIZE_BOUNDS[0]} and {_SIZE_BOUNDS[1]}.",
            param="size",
            code="invalid_value",
        )
    return str(size)


def image_quality(values: Mapping[str, object]) -> str:
    """`quality` validated and resolved (`auto` -> medium, legacy `hd` -> high...)."""
    quality = choice(values, "quality", _QUALITIES, "auto")
    return _QUALITY.get(quality, quality)


def image_background(values: Mapping[str, object], output_format: str) -> str:
    """`background` validated (transparency needs PNG or WEBP), `auto` resolved to opaque."""
    background = choice(values, "background", ("transparent", "opaque", "auto"), "auto")
    if background == "transparent" and output_format == "jpeg":
        raise InvalidRequest(
            "Transparent backgrounds need output_format 'png' or 'webp'.", param="background"
        )
    return "opaque" if background == "auto" else background


def image_format(values: Mapping[str, object]) -> str:
    """`output_format` validated; the bytes are PNG whatever it says (the simulator draws PNGs)."""
    return choice(values, "output_format", ("png", "webp", "jpeg"), "png")


def parse_image_request(
    values: Mapping[str, object], kind: str, inputs: tuple[str, ...] = (), input_images: int = 0
) -> ImageRequest:
    """Validate the options generations and edits share; `inputs` are the uploads' digests."""
    prompt = _prompt(values)
    model = values.get("model")
    model = DEFAULT_MODEL if model is None else model
    if not isinstance(model, str) or not is_image_model(model):
        raise InvalidRequest(
            f"Invalid value: '{str(model)[:SHOWN_CHARS]}'. The model does not generate images.",
            param="model",
            code="invalid_value",
        )
    n = bounded_int(values, "n", 1, MAX_IMAGES, 1)
    output_format = image_format(values)
    choice(values, "response_format", ("b64_json",), "b64_json")
    typed(values, "stream", bool, "a boolean")
    stream = values.get("stream") is True
    partial_images = bounded_int(values, "partial_images", 0, MAX_PARTIAL_IMAGES, 0)
    if stream and n > 1:
        # The completed event carries no image index, so a stream holds one image.
        raise InvalidRequest("Streaming supports n=1 only.", param="n", code="invalid_value")
    # What shapes the picture, resolved (an absent size and "auto" draw the same image).
    shaping: JSON = {
        "prompt": prompt,
        "model": model,
        "size": image_size(values),
        "quality": image_quality(values),
        "background": image_background(values, output_format),
        "output_format": output_format,
        "output_compression": bounded_int(values, "output_compression", 0, 100, 100),
        "moderation": choice(values, "moderation", ("low", "auto"), "auto"),
        "style": choice(values, "style", ("vivid", "natural"), "vivid"),
        "input_fidelity": choice(values, "input_fidelity", ("high", "low"), "low"),
        "inputs": inputs,
    }
    digest = hashlib.sha256(orjson.dumps(shaping, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return ImageRequest(
        kind=kind,
        model=model,
        prompt=prompt,
        n=n,
        size=shaping["size"],
        quality=shaping["quality"],
        background=shaping["background"],
        output_format=output_format,
        stream=stream,
        partial_images=partial_images,
        digest=digest,
        input_images=input_images,
    )


def image_output_tokens(quality: str, size: str) -> int:
    """Output tokens of one image: gpt-image-1's 1024x1024 figure scaled by area."""
    width, _, height = size.partition("x")
    per_1024 = OUTPUT_TOKENS_1024.get(_QUALITY.get(quality, quality), OUTPUT_TOKENS_1024["medium"])
    return max(1, round(per_1024 * int(width) * int(height) / (1024 * 1024)))


def image_usage(prompt: str, input_images: int, output_tokens: int) -> JSON:
    """Token `usage` as gpt-image-1 reports it (`ImagesResponse.usage`, `tool_usage.image_gen`)."""
    text = count_tokens(prompt)
    images = input_images * INPUT_IMAGE_TOKENS
    return {
        "input_tokens": text + images,
        "input_tokens_details": {"image_tokens": images, "text_tokens": text},
        "output_tokens": output_tokens,
        "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
        "total_tokens": text + images + output_tokens,
    }


def _b64(state: SimulatorState, seed: str) -> str:
    return state.image_url(seed).partition(",")[2]


def images_body(state: SimulatorState, request: ImageRequest, created: int) -> JSON:
    """The non-streamed `ImagesResponse`."""
    images: list[JSON] = []
    for index in range(request.n):
        image: JSON = {"b64_json": _b64(state, request.seed(index))}
        if not request.openai_shaped:  # GPT image models do not revise prompts
            image["revised_prompt"] = request.prompt
        images.append(image)
    body: JSON = {"created": created, "data": images}
    if request.openai_shaped:
        body |= request.settings()
        if state.images_usage:
            body["usage"] = request.usage()
    return body


def partial_png_b64(seed: str, index: int, image_bytes: int) -> str:
    """Partial image `index` of a stream: a smaller PNG of its own."""
    return pybase64.b64encode(make_png(f"{seed}|partial|{index}", max(64, image_bytes // 4))).decode()


def image_events(state: SimulatorState, request: ImageRequest, created: int) -> Iterator[JSON]:
    """The stream: `partial_images` partial events, then the completed one with the image."""
    settings = request.settings()
    seed = request.seed(0)
    for index in range(request.partial_images):
        yield {
            "type": f"{request.kind}.partial_image",
            "b64_json": partial_png_b64(seed, index, state.image_bytes),
            "created_at": created,
            "partial_image_index": index,
            **settings,
        }
    completed: JSON = {
        "type": f"{request.kind}.completed",
        "b64_json": _b64(state, seed),
        "created_at": created,
    }
    completed |= settings
    if request.openai_shaped and state.images_usage:
        completed["usage"] = request.usage()
    yield completed


async def answer_images(
    request: web.Request, state: SimulatorState, image: ImageRequest
) -> web.StreamResponse:
    """Wait like an image model, then answer as JSON or as the event stream."""
    if (failure := await answer_delay(state, image=True)) is not None:
        return failure
    created = int(time.time())
    if image.stream:
        return await write_events(request, state, image_events(state, image, created))
    return json_response(images_body(state, image, created))


async def _generate(request: web.Request, state: SimulatorState, body: JSON) -> web.StreamResponse:
    return await answer_images(request, state, parse_image_request(body, "image_generation"))


def generations_route(state: SimulatorState) -> Handler:
    """`POST /v1/images/generations`, counted as `calls["images"]`."""
    return route(state, "images", _generate)
