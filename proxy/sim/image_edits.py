"""The simulated `POST /v1/images/edits`: a multipart/form-data upload of images, mask and options.

The form as the openai SDK sends it (`resources/images.py` `edit()`): one file as `image`, a list
as repeated `image[]` parts, `mask` a file, every other option a text part (`n=2`,
`stream=true`). Validated like OpenAI: a missing image or prompt, a file that is not PNG, JPEG or
WEBP, more than 16 images or a non-multipart body is a 400 in OpenAI's error shape. What arrived
is recorded as `{"content_type", "fields", "files": [{"field", "filename", "content_type", "size",
"sha256", "format"}]}` (no bytes kept); the output PNG is seeded by the options and the sha256 of
every upload, so a different upload gives a different image.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.typedefs import Handler

from proxy.sim.http import JSON, InvalidRequest, route
from proxy.sim.images import answer_images, parse_image_request
from proxy.sim.params import SHOWN_CHARS, invalid_type, missing
from proxy.sim.png import PNG_SIGNATURE

if TYPE_CHECKING:
    from proxy.sim.simulator import SimulatorState

MAX_INPUT_IMAGES = 16  # OpenAI's limit for GPT image models
MAX_FILE_BYTES = 50 * 1024 * 1024  # per image, OpenAI's limit for GPT image models
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 64
IMAGE_FIELDS = ("image", "image[]")
_INTEGERS = ("n", "partial_images", "output_compression")
_SUPPORTED = "Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'."


def sniff_format(data: bytes) -> str | None:
    """The image format by its magic bytes (PNG, JPEG, WEBP), None for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


async def _read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    """A part's bytes, refused once past `limit` (aiohttp's client_max_size does not bound parts)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(f"Invalid {what}: larger than {limit} bytes.", param=part.name)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: web.Request) -> JSON:
    """The upload as a record of its text fields and the digests of its files."""
    if request.content_type != "multipart/form-data":
        raise InvalidRequest(
            f"Invalid Content-Type header ({request.content_type[:SHOWN_CHARS]}), "
            "expected multipart/form-data.",
            code="invalid_content_type",
        )
    fields: dict[str, str] = {}
    files: list[JSON] = []
    try:
        await _read_parts(request, fields, files)
    except ValueError:  # aiohttp's multipart reader: no boundary, broken framing
        raise InvalidRequest("The multipart/form-data body could not be parsed.") from None
    return {"content_type": request.content_type, "fields": fields, "files": files}


async def _read_parts(request: web.Request, fields: dict[str, str], files: list[JSON]) -> None:
    parts = 0
    async for part in await request.multipart():
        parts += 1
        if not isinstance(part, BodyPartReader) or parts > MAX_PARTS:
            raise InvalidRequest(f"The multipart body has nested parts or more than {MAX_PARTS} parts.")
        name = part.name or ""
        if part.filename is None:
            fields[name] = (await _read_part(part, MAX_FIELD_BYTES, f"field '{name}'")).decode(
                errors="replace"
            )
            continue
        data = await _read_part(part, MAX_FILE_BYTES, f"file '{name}'")
        files.append(
            {
                "field": name,
                "filename": part.filename,
                "content_type": part.headers.get(hdrs.CONTENT_TYPE),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "format": sniff_format(data),
            }
        )


def _typed(fields: dict[str, str]) -> dict[str, object]:
    """Form values as the JSON types the shared validation expects (`n=2` -> 2)."""
    values: dict[str, object] = dict(fields)
    for name in _INTEGERS:
        text = fields.get(name)
        if text is not None:
            try:
                values[name] = int(text)
            except ValueError:
                raise invalid_type(name, "an integer", text) from None
    if "stream" in fields:
        values["stream"] = {"true": True, "false": False}.get(fields["stream"], fields["stream"])
    return values


def _check_files(record: JSON) -> tuple[list[JSON], list[JSON]]:
    fields: dict[str, str] = record["fields"]
    for name in (*IMAGE_FIELDS, "mask"):
        if name in fields:
            raise invalid_type(name, "a file", fields[name])
    images = [f for f in record["files"] if f["field"] in IMAGE_FIELDS]
    masks = [f for f in record["files"] if f["field"] == "mask"]
    if not images:
        raise missing("image")
    if len(images) > MAX_INPUT_IMAGES or len(masks) > 1:
        raise InvalidRequest(
            f"Invalid 'image': at most {MAX_INPUT_IMAGES} images and one mask.", param="image"
        )
    for upload in (*images, *masks):
        if upload["format"] is None or (upload in masks and upload["format"] != "png"):
            shown = str(upload["content_type"])[:SHOWN_CHARS]
            raise InvalidRequest(
                f"Invalid file '{upload['field']}': unsupported mimetype ('{shown}'). {_SUPPORTED}",
                param=upload["field"],
                code="invalid_image_format",
            )
    return images, masks


async def _edit(request: web.Request, state: SimulatorState, record: JSON) -> web.StreamResponse:
    images, masks = _check_files(record)
    values = _typed(record["fields"])
    inputs = tuple(f"{upload['field']}:{upload['sha256']}" for upload in (*images, *masks))
    edit = parse_image_request(values, "image_edit", inputs, input_images=len(images))
    return await answer_images(request, state, edit)


def edits_route(state: SimulatorState) -> Handler:
    """`POST /v1/images/edits`, counted as `calls["images_edits"]`."""
    return route(state, "images_edits", _edit, read=read_form)
