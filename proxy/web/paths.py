"""Request targets the proxy will act on: one strict check of the raw bytes, before any decoding.

aiohttp routes on the raw path but ``request.path`` is percent-decoded, and the upstream may
decode and normalise again: ``/v1/models/%2e%2e/files`` reached the upstream as ``/v1/files``
with the proxy's own key. So the decision is made once, on ``request.raw_path``, and what is
forwarded is exactly what was checked. A path passes only when every segment is canonical
(RFC 3986 §3.3 ``pchar`` without ``;`` path parameters, §6.2.2.2: no percent-encoded
unreserved characters) and no decoder, however lenient, can turn it into a different segment
structure: no ``%2e %2f %5c %25 %00``, no encoded byte outside printable ASCII (overlong UTF-8
``%c0%ae``, fullwidth ``%ef%bc%8e``), no backslash, no ``.``/``..`` or empty segment.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from proxy.errors import invalid_path

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# RFC 3986 pchar, minus ";" (path parameters: "/a;/../b" is a dot segment to some servers).
_PLAIN = _UNRESERVED | frozenset("!$&'()*+,=:@")
_HEX = frozenset(string.hexdigits)
# Encoded bytes that would change the segment structure once decoded (or re-decoded).
_STRUCTURAL = frozenset(b"./\\%\x00")
_DOT_SEGMENTS = frozenset({".", ".."})
# The query is forwarded as received; it only has to be printable ASCII without a fragment.
_QUERY = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"#"}


@dataclass(frozen=True, slots=True)
class Target:
    """A checked request target.

    ``raw_path`` is forwarded upstream byte for byte; ``path`` is the same path decoded (the
    check guarantees decoding changes no separator or dot), for routing decisions.
    """

    raw_path: str
    path: str
    query: str

    @property
    def raw(self) -> str:
        """Path and query as received, for the upstream URL."""
        return f"{self.raw_path}?{self.query}" if self.query else self.raw_path


def parse_target(raw_target: str) -> Target:
    """The checked target of ``request.raw_path`` (path + query); 400 ``invalid_path`` otherwise."""
    path, _, query = raw_target.partition("?")
    # Set containment, not a loop over characters: this runs on every request.
    if not path.startswith("/") or not _QUERY.issuperset(query):
        raise invalid_path()
    if path == "/":
        return Target("/", "/", query)
    decoded = [_decode_segment(segment) for segment in path[1:].split("/")]
    return Target(path, "/" + "/".join(decoded), query)


def _decode_segment(segment: str) -> str:
    """One path segment decoded, or 400 when it is not canonical and harmless."""
    if not segment or segment in _DOT_SEGMENTS:
        raise invalid_path()
    if "%" not in segment:
        if not _PLAIN.issuperset(segment):
            raise invalid_path()
        return segment
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char != "%":
            if char not in _PLAIN:
                raise invalid_path()
            out.append(char)
            index += 1
            continue
        hex_digits = segment[index + 1 : index + 3]
        if len(hex_digits) != 2 or any(c not in _HEX for c in hex_digits):
            raise invalid_path()
        byte = int(hex_digits, 16)
        if not 0x20 <= byte <= 0x7E or byte in _STRUCTURAL or chr(byte) in _UNRESERVED:
            raise invalid_path()
        out.append(chr(byte))
        index += 3
    return "".join(out)
