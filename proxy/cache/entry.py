"""Stored-entry format: the response with its base64 images cut out, plus where to splice them back.

A cached image response is ~2 MB of JSON, 99% of it base64. We keep the original response bytes
minus the base64 payloads (the *template*), and each PNG once, as raw bytes, in a
content-addressed blob. A hit re-encodes with SIMD base64 straight into the output parts: no JSON
parsing or re-serialising of megabytes, and the client gets exactly the bytes it got the first time.

The structure is out of band (``LCP2``): each blob reference says where its payload goes both as a
byte offset in the template (JSON hits) and as a position in the document (choice, image: stream
replays). Nothing is ever found by searching for a marker or a suffix that content could contain.
``LCP1`` entries (in-band markers) are not read: they are misses, and overwritten.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

MAGIC = b"LCP2"
_HEADER = struct.Struct(">4sI")
# Payloads smaller than this stay inline: a blob round trip costs more than it saves.
MIN_BLOB_BYTES = 1024


@dataclass(frozen=True, slots=True)
class BlobRef:
    """One image cut out of the template: where it goes, its content address and decoded size.

    ``offset`` is the splice point in the template bytes; ``choice`` and ``image`` are the
    positions in ``choices`` and in that choice's ``message.images`` whose URL it completes.
    """

    offset: int
    sha256: str
    size: int
    choice: int
    image: int


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """What a hit needs without touching the template: age, accounting and blob references."""

    created: float
    model: str
    prompt_tokens: int
    completion_tokens: int
    images: int
    blobs: tuple[BlobRef, ...]
    expires: float = float("inf")  # wall-clock time the entry stops being servable

    def to_json(self) -> bytes:
        """Compact header JSON."""
        return orjson.dumps(
            {
                "c": self.created,
                "m": self.model,
                "p": self.prompt_tokens,
                "o": self.completion_tokens,
                "i": self.images,
                "b": [[b.offset, b.sha256, b.size, b.choice, b.image] for b in self.blobs],
                "e": self.expires if self.expires != float("inf") else None,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | memoryview) -> EntryMeta:
        """Inverse of ``to_json``."""
        data = orjson.loads(raw)
        return cls(
            created=float(data["c"]),
            model=str(data["m"]),
            prompt_tokens=int(data["p"]),
            completion_tokens=int(data["o"]),
            images=int(data["i"]),
            blobs=tuple(BlobRef(int(o), str(s), int(n), int(c), int(i)) for o, s, n, c, i in data["b"]),
            expires=float(data["e"]) if data.get("e") is not None else float("inf"),
        )


@dataclass(frozen=True, slots=True)
class SplitResponse:
    """A response ready to store: template bytes, blob references and the blob contents."""

    template: bytes
    refs: tuple[BlobRef, ...]
    blobs: dict[str, bytes]


def image_slots(doc: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
    """``(choice, image, image_url object)`` for every ``choices[].message.images[].image_url``
    whose ``url`` is a string, in document order (which is also their order in the bytes)."""
    slots: list[tuple[int, int, dict[str, Any]]] = []
    choices = doc.get("choices")
    for choice_pos, choice in enumerate(choices if isinstance(choices, list) else ()):
        message = choice.get("message") if isinstance(choice, dict) else None
        images = message.get("images") if isinstance(message, dict) else None
        for image_pos, image in enumerate(images if isinstance(images, list) else ()):
            owner = image.get("image_url") if isinstance(image, dict) else None
            if isinstance(owner, dict) and isinstance(owner.get("url"), str):
                slots.append((choice_pos, image_pos, owner))
    return slots


def image_owner(doc: dict[str, Any], ref: BlobRef) -> dict[str, Any] | None:
    """The ``image_url`` object at ``ref``'s position, if the document has one there."""
    for choice, image, owner in image_slots(doc):
        if (choice, image) == (ref.choice, ref.image):
            return owner
    return None


def image_urls(doc: dict[str, Any]) -> list[str]:
    """Every ``choices[].message.images[].image_url.url`` in document order."""
    return [owner["url"] for _, _, owner in image_slots(doc)]


def _payload(url: str) -> tuple[bytes, bytes] | None:
    """Split a data URL into (prefix up to ``base64,``, payload) when the payload is canonical base64."""
    if not url.startswith("data:"):
        return None
    marker = url.find(";base64,")
    if marker < 0 or len(url) - marker < MIN_BLOB_BYTES:
        return None
    head = url[: marker + 8].encode("ascii", "replace")
    payload = url[marker + 8 :].encode("ascii", "replace")
    return head, payload


def split_response(raw: bytes, doc: dict[str, Any]) -> SplitResponse:
    """Cut image payloads out of ``raw`` (the exact bytes sent to the client; ``doc`` is them parsed).

    Payloads are decoded only when re-encoding reproduces them byte for byte, and the split is
    verified both ways (the bytes rebuild to ``raw``, the template parses to ``doc`` with each cut
    exactly at its position); anything unusual keeps the response whole, which is always correct.
    """
    parts: list[bytes] = []
    refs: list[BlobRef] = []
    blobs: dict[str, bytes] = {}
    cursor = 0
    template_len = 0
    for choice, image, owner in image_slots(doc):
        found = _payload(owner["url"])
        if found is None:
            continue
        head, payload = found
        try:
            decoded = pybase64.b64decode(payload, validate=True)
        except ValueError:
            continue
        if pybase64.b64encode(decoded) != payload:
            continue
        start = raw.find(head + payload, cursor)
        if start < 0:
            continue  # escaped differently in the raw bytes (e.g. "\/"): keep inline
        cut = start + len(head)
        parts.append(raw[cursor:cut])
        template_len += cut - cursor
        sha = hashlib.sha256(decoded).hexdigest()
        refs.append(BlobRef(template_len, sha, len(decoded), choice, image))
        blobs[sha] = decoded
        cursor = cut + len(payload)
    if not refs:
        return SplitResponse(raw, (), {})
    parts.append(raw[cursor:])
    split = SplitResponse(b"".join(parts), tuple(refs), blobs)
    rebuilt = b"".join(rebuild_parts(split.template, split.refs, [blobs[r.sha256] for r in refs]))
    if rebuilt != raw or not _cut_in_place(split, doc):
        return SplitResponse(raw, (), {})
    return split


def _cut_in_place(split: SplitResponse, doc: dict[str, Any]) -> bool:
    """Every cut is the payload of the image its reference names, and nothing else was cut.

    The first occurrence of a payload in the bytes could be inside some text rather than in the
    image (an answer quoting a data URL): the template must then not be stored split.
    """
    try:
        cut_doc = orjson.loads(split.template)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(cut_doc, dict):
        return False
    for ref in split.refs:
        cut, original = image_owner(cut_doc, ref), image_owner(doc, ref)
        if cut is None or original is None:
            return False
        full: str = original["url"]
        if not full.startswith(cut["url"]) or len(full) - len(cut["url"]) != -(-ref.size // 3) * 4:
            return False
        cut["url"] = full
    return bool(cut_doc == doc)


def rebuild_parts(
    template: bytes | memoryview, refs: Sequence[BlobRef], blobs: Sequence[bytes]
) -> Iterator[bytes | memoryview]:
    """Template slices interleaved with base64 of each blob: the original response, in parts."""
    cursor = 0
    view = memoryview(template)
    for ref, blob in zip(refs, blobs, strict=True):
        yield view[cursor : ref.offset]
        yield pybase64.b64encode(blob)
        cursor = ref.offset
    yield view[cursor:]


def encode_entry(meta: EntryMeta, template: bytes) -> bytes:
    """``MAGIC | len(header) | header JSON | template``."""
    header = meta.to_json()
    return b"".join((_HEADER.pack(MAGIC, len(header)), header, template))


def decode_entry(data: bytes) -> tuple[EntryMeta, memoryview]:
    """Parse a stored entry; raises ``ValueError`` on anything that is not one (never serve junk)."""
    if len(data) < _HEADER.size:
        raise ValueError("entry too short")
    magic, header_len = _HEADER.unpack_from(data)
    if magic != MAGIC or _HEADER.size + header_len > len(data):
        raise ValueError("not a cache entry")
    view = memoryview(data)
    try:
        meta = EntryMeta.from_json(view[_HEADER.size : _HEADER.size + header_len])
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
        # A wrong-shaped header must look like any other junk to the caller, not crash a request.
        raise ValueError(f"bad entry header: {exc!r}") from None
    template = view[_HEADER.size + header_len :]
    cursor = 0
    for ref in meta.blobs:
        if not cursor <= ref.offset <= len(template) or min(ref.size, ref.choice, ref.image) < 0:
            raise ValueError("blob offsets out of order or beyond template")
        cursor = ref.offset
    return meta, template
