"""Thumbnails of cached images (≤ 64 KB WebP), made once per image and kept as a blob.

A thumbnail is keyed by the image's sha256 (``{p}:thumb:{sha256}``), so an image cached by many
entries is shrunk once. It is made on first view, off the event loop (Pillow decodes a 1.5 MB PNG
in tens of milliseconds), and lives as long as the entry that showed it. Images Pillow cannot read
(or larger than ``MAX_PIXELS``, a decompression bomb) get no thumbnail: the page shows a
placeholder, the proxy keeps running.
"""

from __future__ import annotations

import asyncio
import io
import logging
import warnings

from PIL import Image, UnidentifiedImageError

from proxy.cache.response import ResponseCache
from proxy.storage.base import ByteStore

log = logging.getLogger(__name__)

THUMB_PX = 256
THUMB_MAX_BYTES = 64 * 1024
MAX_PIXELS = 40_000_000  # ~6300 x 6300: far above any generated image, far below a bomb

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_type(data: bytes) -> str | None:
    """The image type the bytes say they are (magic numbers, never a client's word); None: not one."""
    for magic, kind in _SIGNATURES:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def make_thumbnail(data: bytes) -> bytes | None:
    """A WebP of at most THUMB_PX on its longer side and THUMB_MAX_BYTES; None if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    return None
                image.thumbnail((THUMB_PX, THUMB_PX))
                frame = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, Warning) as exc:
        log.info("no thumbnail: %s", type(exc).__name__)
        return None
    for quality in (80, 60, 40, 20):
        out = io.BytesIO()
        frame.save(out, "WEBP", quality=quality)
        if out.tell() <= THUMB_MAX_BYTES:
            return out.getvalue()
    frame.thumbnail((THUMB_PX // 2, THUMB_PX // 2))
    out = io.BytesIO()
    frame.save(out, "WEBP", quality=20)
    return out.getvalue() if out.tell() <= THUMB_MAX_BYTES else None


async def read_blob(cache: ResponseCache, sha256: str, size: int) -> bytes | None:
    """A cached image's bytes (one MGET of its chunks); None when a chunk is gone or sizes differ."""
    chunks = await cache.store.mget(cache.blob_keys(sha256, size))
    if any(chunk is None for chunk in chunks):
        return None
    data = b"".join(chunk for chunk in chunks if chunk is not None)
    return data if len(data) == size else None


async def thumbnail(cache: ResponseCache, store: ByteStore, sha256: str, size: int, ttl: int) -> bytes | None:
    """The thumbnail of a cached image: from the store, or made now and stored for ``ttl`` seconds."""
    key = f"{cache.prefix}:thumb:{sha256}"
    found = await store.get(key)
    if found is not None:
        return found
    data = await read_blob(cache, sha256, size)
    if data is None:
        return None
    thumb = await asyncio.to_thread(make_thumbnail, data)
    if thumb is not None:
        await store.set(key, thumb, max(60, ttl))
    return thumb
