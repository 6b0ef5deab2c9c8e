r"""Stored-entry format: the response with its base64 payloads cut out, plus where to splice them back.

A cached image response is ~2 MB of JSON, 99% of it base64. We keep the original response bytes
minus the base64 payloads (the *template*), and each image once, as raw bytes, in a
content-addressed blob. A hit re-encodes with SIMD base64 straight into the output parts: no JSON
parsing or re-serialising of megabytes, and the client gets exactly the bytes it got the first time.

The structure is out of band (``LCP2``): each blob reference says where its payload goes both as a
byte offset in the template (JSON hits) and as a position in the document (stream replays). Which
strings of a document can hold a payload is the endpoint's knowledge: it hands the cache a walk
(``BlobWalk``) that lists them as ``BlobSlot``\ s in document order; the position it gives each slot
(chat: choice and image index) is what the entry stores. Nothing is ever found by searching for a
marker or a suffix that content could contain. ``LCP1`` entries (in-band markers) are not read:
they are misses, and overwritten.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from proxy.cache.replay import Holes, ReplayEvent, replay_parts

MAGIC = b"LCP2"
_HEADER = struct.Struct(">4sI")
# Payloads smaller than this (counting the 8 characters of a data URL's ";base64," marker, as LCP2
# always has) stay inline: a blob round trip costs more than it saves.
MIN_BLOB_BYTES = 1024
_MARKER_CHARS = len(";base64,")


@dataclass(frozen=True, slots=True)
class BlobSlot:
    """One string of a document that may hold a base64 payload: ``owner[field]``, from character
    ``start`` on (after a ``data:...;base64,`` prefix, or 0 for a bare ``b64_json``).

    ``position`` names the slot in the endpoint's walk (chat: choice and image index); a stored
    reference keeps it, so a replay finds the slot again in the (small) template document.
    """

    position: tuple[int, int]
    owner: dict[str, Any]
    field: str
    start: int


# An endpoint's walk over one of its documents: every slot, in document (= byte) order.
BlobWalk = Callable[[Mapping[str, Any]], list[BlobSlot]]


@dataclass(frozen=True, slots=True)
class BlobRef:
    """One payload cut out of the template: where it goes, its content address and decoded size.

    ``offset`` is the splice point in the template bytes; ``position`` the slot it completes.
    """

    offset: int
    sha256: str
    size: int
    position: tuple[int, int]


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
    image_prompt_tokens: int = 0  # of prompt_tokens, the images' (priced apart by GPT image models)
    image_model: str | None = None  # the model that made the images, if not ``model`` (``Usage``)

    def to_json(self) -> bytes:
        """Compact header JSON (``t`` only when there are image prompt tokens, ``g`` only when
        another model made the images)."""
        header: dict[str, Any] = {
            "c": self.created,
            "m": self.model,
            "p": self.prompt_tokens,
            "o": self.completion_tokens,
            "i": self.images,
            "b": [[b.offset, b.sha256, b.size, *b.position] for b in self.blobs],
            "e": self.expires if self.expires != float("inf") else None,
        }
        if self.image_prompt_tokens:
            header["t"] = self.image_prompt_tokens
        if self.image_model is not None:
            header["g"] = self.image_model
        return orjson.dumps(header)

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
            blobs=tuple(BlobRef(int(o), str(s), int(n), (int(c), int(i))) for o, s, n, c, i in data["b"]),
            expires=float(data["e"]) if data.get("e") is not None else float("inf"),
            image_prompt_tokens=int(data.get("t", 0)),
            image_model=str(data["g"]) if data.get("g") is not None else None,
        )


@dataclass(frozen=True, slots=True)
class SplitResponse:
    """A response ready to store: template bytes, blob references and the blob contents."""

    template: bytes
    refs: tuple[BlobRef, ...]
    blobs: dict[str, bytes]


def split_response(raw: bytes, doc: Mapping[str, Any], walk: BlobWalk) -> SplitResponse:
    """Cut payloads out of ``raw`` (the exact bytes sent to the client; ``doc`` is them parsed).

    Payloads are decoded only when re-encoding reproduces them byte for byte, and the split is
    verified both ways (the bytes rebuild to ``raw``, the template parses to ``doc`` with each cut
    exactly at its slot); anything unusual keeps the response whole, which is always correct.
    """
    parts: list[bytes] = []
    refs: list[BlobRef] = []
    blobs: dict[str, bytes] = {}
    cursor = 0
    template_len = 0
    for slot in walk(doc):
        text: str = slot.owner[slot.field]
        if len(text) - slot.start + _MARKER_CHARS < MIN_BLOB_BYTES:
            continue
        head = text[: slot.start].encode("ascii", "replace")
        payload = text[slot.start :].encode("ascii", "replace")
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
        refs.append(BlobRef(template_len, sha, len(decoded), slot.position))
        blobs[sha] = decoded
        cursor = cut + len(payload)
    if not refs:
        return SplitResponse(raw, (), {})
    parts.append(raw[cursor:])
    split = SplitResponse(b"".join(parts), tuple(refs), blobs)
    rebuilt = b"".join(rebuild_parts(split.template, split.refs, [blobs[r.sha256] for r in refs]))
    if rebuilt != raw or not _cut_in_place(split, doc, walk):
        return SplitResponse(raw, (), {})
    return split


def slots_by_position(doc: Mapping[str, Any], walk: BlobWalk) -> dict[tuple[int, int], BlobSlot]:
    """The slots of ``doc``, found by the position a reference names."""
    return {slot.position: slot for slot in walk(doc)}


def _cut_in_place(split: SplitResponse, doc: Mapping[str, Any], walk: BlobWalk) -> bool:
    """Every cut is the payload of the slot its reference names, and nothing else was cut.

    The first occurrence of a payload in the bytes could be inside some text rather than in the
    slot (an answer quoting a data URL): the template must then not be stored split.
    """
    try:
        cut_doc = orjson.loads(split.template)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(cut_doc, dict):
        return False
    cut_slots, slots = slots_by_position(cut_doc, walk), slots_by_position(doc, walk)
    for ref in split.refs:
        cut, original = cut_slots.get(ref.position), slots.get(ref.position)
        if cut is None or original is None:
            return False
        full: str = original.owner[original.field]
        if not full.startswith(cut.owner[cut.field]):
            return False
        if len(full) - len(cut.owner[cut.field]) != -(-ref.size // 3) * 4:
            return False
        cut.owner[cut.field] = full
    return bool(cut_doc == doc)


@dataclass(frozen=True, slots=True)
class CachedEntry:
    """A hit: the stored meta, the template and the blob bytes in splice order."""

    key: str
    meta: EntryMeta
    template: memoryview
    blobs: tuple[bytes, ...]
    body: bytes | None = None  # the whole JSON body, kept ready by the hot tier

    def young_enough(self, max_age: int | None, now: float) -> bool:
        """Whether a client sending ``Cache-Control: max-age`` accepts this entry (RFC 9111 §5.2.1.1)."""
        return max_age is None or now - self.meta.created < max_age

    def age(self, now: float) -> int:
        """Whole seconds since the entry was stored (the ``Age`` header)."""
        return max(0, int(now - self.meta.created))

    def json_body(self) -> bytes:
        """The exact JSON body first sent to a client, in one piece."""
        if self.body is not None:
            return self.body
        return b"".join(rebuild_parts(self.template, self.meta.blobs, self.blobs))

    def document(self) -> dict[str, Any]:
        """The response with its payloads still cut out (cheap: the template is small)."""
        doc: dict[str, Any] = orjson.loads(self.template)
        return doc

    def sse_parts(
        self, walk: BlobWalk, replay: Callable[[dict[str, Any]], Iterable[ReplayEvent]]
    ) -> Iterator[bytes]:
        """The entry replayed as server-sent events (``replay`` is the endpoint's, over the template
        document), each payload spliced back into the slot ``walk`` finds at its position.

        The references are checked against the template before anything is returned (a
        ``ValueError`` means the entry is corrupt and nothing was sent yet).
        """
        doc = self.document()
        slots = slots_by_position(doc, walk) if self.meta.blobs else {}
        holes: Holes = {}
        for ref, blob in zip(self.meta.blobs, self.blobs, strict=True):
            slot = slots.get(ref.position)
            if slot is None:
                raise ValueError(f"entry {self.key}: no slot at position {ref.position}")
            holes[id(slot.owner)] = (slot.field, blob)
        return replay_parts(replay(doc), holes)


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
        if not cursor <= ref.offset <= len(template) or min(ref.size, *ref.position) < 0:
            raise ValueError("blob offsets out of order or beyond template")
        cursor = ref.offset
    return meta, template
