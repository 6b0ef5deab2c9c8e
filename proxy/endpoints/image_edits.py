"""``POST /v1/images/edits``: a multipart/form-data upload (RFC 7578), cached like generations.

The body is read under ``PROXY_MAX_BODY_BYTES`` as it streams in (``pipeline.flow.read_body``),
then parsed here once (python-multipart, the parser Starlette uses): text fields by name, files by
the sha256 of their bytes and their declared ``Content-Type`` (the upstream refuses a type it does
not take, so the type can change the answer). File names are not keyed: the upstream reads the
bytes, not the name. The key is a mapping, so the order of the fields and the boundary do not
matter; repeated values of one name (``image[]``) keep their order, which does (a ``mask`` or
``markup`` applies to the first image). The exact bytes received, boundary and all, go upstream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from proxy.endpoints.base import Parsed
from proxy.endpoints.fields import check_bounds
from proxy.endpoints.images import (
    AUTO_MODEL,
    MAX_IMAGES,
    MAX_PARTIAL_IMAGES,
    ImagesAPI,
    check_count,
    check_prompt_and_model,
)
from proxy.errors import bad_request

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_PARTS = 64  # OpenAI takes at most 16 images, a mask, a markup and some twenty options
MAX_FIELD_BYTES = 256 * 1024  # one text field (a 32,000-character prompt is at most 128 KB)
SHOWN_CHARS = 64  # a client's value is echoed in a message at most this long
IMAGE_FIELDS = ("image", "image[]")
# Integer options (sent as text) and their ranges (OpenAI "Create image edit").
INTEGERS = {"n": (1, MAX_IMAGES), "partial_images": (0, MAX_PARTIAL_IMAGES), "output_compression": (0, 100)}

Form = Mapping[str, Any]  # name -> text (a str, or a list of them when repeated), or its files


class _FormReader:
    """python-multipart's callbacks: text parts collected (bounded), file parts hashed as they
    are parsed (never copied)."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[bytes, bytes], bytes | str]] = []  # headers, text or sha256
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._text = bytearray()
        self._file: Any = None  # the running sha256 of a file part

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise bad_request(f"The multipart body has more than {MAX_PARTS} parts.")
        self._headers, self._text, self._file = {}, bytearray(), None

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        if b"filename" in parse_options_header(self._headers.get(b"content-disposition"))[1]:
            self._file = hashlib.sha256()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.update(memoryview(data)[start:end])
            return
        self._text += memoryview(data)[start:end]
        if len(self._text) > MAX_FIELD_BYTES:
            raise bad_request(f"A text field of the form is larger than {MAX_FIELD_BYTES} bytes.")

    def _part_end(self) -> None:
        value = bytes(self._text) if self._file is None else self._file.hexdigest()
        self.parts.append((self._headers, value))

    def _end(self) -> None:
        self.ended = True


def read_form(raw: bytes, content_type: str) -> Form:
    """The form of a multipart/form-data body; a 400 for any other body or a broken one."""
    media, options = parse_options_header(content_type)
    if media != b"multipart/form-data":
        shown = media.decode("latin-1")[:SHOWN_CHARS]
        raise bad_request(f"Invalid Content-Type header ({shown}), expected multipart/form-data.")
    boundary = options.get(b"boundary")
    if not boundary:
        raise bad_request("The multipart/form-data Content-Type header has no boundary.")
    reader = _FormReader()
    delimiter = b"--" + boundary
    if not raw.startswith(delimiter):
        # A preamble before the first delimiter is allowed and ignored (RFC 2046 §5.1.1); the
        # parser takes none, so it is cut off (a copy, in this rare case only).
        at = raw.find(b"\r\n" + delimiter)
        raw = raw[at + 2 :] if at >= 0 else raw
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        parser.write(raw)
        parser.finalize()
    except FormParserError:
        raise bad_request("The multipart/form-data body could not be parsed.") from None
    if not reader.ended:
        raise bad_request("The multipart/form-data body ends before its closing boundary.")
    return _collect(reader.parts)


def _collect(parts: list[tuple[dict[bytes, bytes], bytes | str]]) -> Form:
    """Parts by name: text as str (a list when repeated), files as lists of sha256 and type."""
    form: dict[str, Any] = {}
    files: set[str] = set()
    for headers, value in parts:
        disposition = parse_options_header(headers.get(b"content-disposition"))[1]
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        shown = name[:SHOWN_CHARS]
        if isinstance(value, str):  # a file
            if name in form and name not in files:
                raise bad_request(f"Invalid type for '{shown}': expected a string.", param=shown)
            files.add(name)
            media = parse_options_header(headers.get(b"content-type"))[0].decode("latin-1")
            form.setdefault(name, []).append({"sha256": value, "content_type": media})
            continue
        if name in files:
            raise bad_request(f"Invalid type for '{shown}': expected a file.", param=shown)
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request(f"The form field '{shown}' is not valid UTF-8.", param=shown) from None
        previous = form.get(name)
        form[name] = (
            text if previous is None else [*([previous] if isinstance(previous, str) else previous), text]
        )
    return form


def _integer(form: Form, name: str) -> int | None:
    """An integer option sent as text, checked against its range (``INTEGERS``)."""
    text = form.get(name)
    if text is None:
        return None
    try:
        value = int(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if value is None:
        raise bad_request(f"Invalid type for '{name}': expected an integer.", param=name)
    check_count(name, value, *INTEGERS[name])
    return value


def check_form(form: Form) -> None:
    """The checks OpenAI makes before editing (400s)."""
    check_bounds({"model": form.get("model")})
    for name in IMAGE_FIELDS:
        if isinstance(form.get(name), str):
            raise bad_request(f"Invalid type for '{name}': expected a file.", param=name)
    if not any(name in form for name in IMAGE_FIELDS):
        raise bad_request("Missing required parameter: 'image'.", param="image")
    if "prompt" not in form:
        raise bad_request("Missing required parameter: 'prompt'.", param="prompt")
    for name in ("prompt", "model"):
        if name in form and not isinstance(form[name], str):
            raise bad_request(f"Invalid type for '{name}': expected a string.", param=name)
    check_prompt_and_model(form["prompt"], form.get("model"))
    for name in INTEGERS:
        _integer(form, name)
    if form.get("stream") not in (None, "true", "false"):
        raise bad_request("Invalid type for 'stream': expected a boolean.", param="stream")


class ImageEdits(ImagesAPI):
    """OpenAI "Create image edit": multipart in, an ``ImagesResponse`` (or ``image_edit.*`` events) out."""

    name = "images.edits"
    route = "/v1/images/edits"
    upstream_path = "/images/edits"
    key_scope = "images.edits"
    events = "image_edit"

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        """The form (``read_form``), checked (``check_form``); ``body`` is the form."""
        form = read_form(raw, content_type)
        check_form(form)
        model = form.get("model") or AUTO_MODEL
        stream = form.get("stream") == "true"
        return Parsed(raw, form, model, stream=stream, cacheable=form.get("response_format") != "url")

    def count(self, parsed: Parsed) -> int:
        """``n``, sent as text."""
        return _integer(parsed.body, "n") or 1

    def uploads(self, parsed: Parsed) -> tuple[int, int]:
        """Every file is reserved as an input image (a mask and a markup too); the images
        (``image``/``image[]``) are billed as such."""
        files = {name: len(value) for name, value in parsed.body.items() if _is_files(value)}
        return sum(files.values()), sum(files.get(name, 0) for name in IMAGE_FIELDS)


def _is_files(value: object) -> bool:
    """Whether a form value is a list of uploaded files (not text)."""
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)
