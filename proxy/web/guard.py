"""Checks every request passes before any handler reads it: target, headers, body encoding.

They run on every route (``/v1``, ``/admin``, ``/metrics``...), so no handler ever sees a path a
decoder could re-interpret, a header it could not forward, or a compressed body.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.errors import invalid_header, unsupported_encoding
from proxy.state import TARGET
from proxy.web.paths import parse_target
from proxy.web.server import close_after_response

_IDENTITY = frozenset({"", "identity"})


@web.middleware
async def request_guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a path or header the proxy will not interpret, 415 for a compressed body."""
    request[TARGET] = parse_target(request.raw_path)
    check_headers(request.headers)
    # RFC 9110 §8.4: a server may answer 415 to a content coding it does not accept. Inflating
    # would turn 61 KB on the wire into 60 MB in memory; the body is not even read (the server
    # never decompresses, see server.ProxyRunner) and the connection is closed after the answer.
    codings = ",".join(request.headers.getall("Content-Encoding", ()))
    if any(coding.strip().lower() not in _IDENTITY for coding in codings.split(",")):
        close_after_response(request)
        raise unsupported_encoding()
    return await handler(request)


def check_headers(headers: Mapping[str, str]) -> None:
    """400 ``invalid_header`` for a value the proxy could not use or forward; the value is never shown.

    aiohttp decodes header bytes as UTF-8 with ``surrogateescape``: invalid UTF-8 would fail only
    when forwarded (a 500 with the value in a traceback). Credentials must be printable ASCII.
    """
    for name, value in headers.items():
        if value.isascii():
            if name.lower() == "authorization" and not value.isprintable():
                raise invalid_header()
            continue
        if name.lower() == "authorization":
            raise invalid_header()
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid_header() from None
