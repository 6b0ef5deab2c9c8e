"""Deterministic, valid PNGs of a chosen size, for the simulated image models.

Real image models return ~1.5 MB PNGs; the cache's whole point is storing those cheaply, so the
simulator must produce the same order of bytes, quickly, and identically for identical requests.
"""

from __future__ import annotations

import random
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_WIDTH = 512
_CHANNELS = 3  # RGB, 8 bits per channel
# signature + IHDR + IDAT/IEND chunk framing + zlib header/trailer
_FIXED_OVERHEAD = 8 + 25 + 12 + 12 + 6


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 over type and data."""
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def make_png(seed: str, approx_bytes: int) -> bytes:
    """A valid RGB PNG of about `approx_bytes`, the same bytes for the same arguments.

    Pixels are pseudo-random so the file cannot compress away, and stored with zlib level 0,
    which is what keeps a 1.5 MB image at a few milliseconds.
    """
    budget = max(0, approx_bytes - _FIXED_OVERHEAD)
    # Narrower images for small sizes, so tiny test PNGs stay close to the size asked for.
    width = max(1, min(_MAX_WIDTH, budget // (_CHANNELS * 8)))
    row_bytes = 1 + width * _CHANNELS  # a filter-type byte starts every scanline
    # zlib level 0 adds 5 bytes per stored block of at most 65535 bytes.
    height = max(1, int(budget / (row_bytes * (1 + 5 / 65535))))
    raw = bytearray(random.Random(seed).randbytes(height * row_bytes))  # noqa: S311 - not crypto
    raw[0::row_bytes] = bytes(height)  # filter type 0 (None) on every scanline
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw, 0)),
            _chunk(b"IEND", b""),
        )
    )
