"""One exception type for every error the proxy itself answers, and its constructors.

Rendered in OpenAI's shape in one place: ``proxy.web.middleware.front_middleware``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiohttp
import orjson
from aiohttp import web


class ProxyError(Exception):
    """An error answered to the client as ``{"error": {"message", "type", "param", "code"}}``.

    The shape matters: the openai SDK picks its exception class from the status and reads
    ``error.message``; ``x-should-retry: false`` stops its automatic retries where retrying is pointless.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        """The OpenAI error JSON."""
        return error_body(self.message, self.type, self.code, self.param)

    def response(self) -> web.Response:
        """The full HTTP response for this error."""
        return web.Response(
            status=self.status,
            body=self.body(),
            content_type="application/json",
            headers=self.headers,
        )


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    """Serialise an OpenAI-style error object."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def bad_request(message: str, param: str | None = None) -> ProxyError:
    """400 ``invalid_request_error``: the request is malformed and nothing was forwarded."""
    return ProxyError(400, message, type="invalid_request_error", param=param)


def too_large(limit: int) -> ProxyError:
    """413: the body is over ``PROXY_MAX_BODY_BYTES``; nothing was forwarded."""
    return ProxyError(
        413,
        f"The request body exceeds the proxy's limit of {limit} bytes.",
        type="invalid_request_error",
        code="request_too_large",
    )


def invalid_path() -> ProxyError:
    """400: the request path is one the proxy refuses to interpret (see ``web.paths.parse_target``)."""
    return ProxyError(
        400,
        "The request path is not allowed: no percent-encoded '.', '/', '\\', '%' or NUL, no "
        "backslash, no '.' or '..' or empty segment, no ';' parameter, only printable ASCII.",
        code="invalid_path",
    )


def invalid_header() -> ProxyError:
    """400: a header the proxy would have to use or forward is malformed. Never names its value."""
    return ProxyError(
        400,
        "A request header is malformed: credentials must be printable ASCII and every value valid UTF-8.",
        code="invalid_header",
    )


def unsupported_encoding() -> ProxyError:
    """415: compressed request bodies are refused unread (a 60 KB gzip body can inflate to 60 MB)."""
    return ProxyError(
        415,
        "Request bodies must not be compressed: send them without Content-Encoding (or 'identity').",
        code="unsupported_content_encoding",
    )


def upstream_invalid_response() -> ProxyError:
    """502: the upstream's answer is unusable (a 200 cut short or not JSON, or not valid HTTP)."""
    return ProxyError(
        502,
        "The upstream's answer was unusable: truncated, not JSON, or not valid HTTP.",
        type="server_error",
        code="upstream_invalid_response",
    )


def upstream_failure(exc: BaseException) -> ProxyError:
    """Map a client-side failure to the gateway error the client sees (504 timeout, else 502)."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return ProxyError(
            504,
            "The upstream did not answer in time.",
            type="server_error",
            code="upstream_timeout",
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        # It did answer, with bytes that are not a valid HTTP response (framing, headers).
        return upstream_invalid_response()
    return ProxyError(
        502,
        f"The upstream could not be reached: {type(exc).__name__}.",
        type="server_error",
        code="upstream_unreachable",
    )


def endpoint_not_allowed(what: str, allowed: Iterable[str]) -> ProxyError:
    """403: a managed key called something it may not (a paid endpoint not in its ``endpoints``, or
    a pass-through route that would spend the proxy's upstream key unmetered); names what it may."""
    may = ", ".join(allowed) or "no endpoint"
    return ProxyError(
        403,
        f"This key cannot call {what} through this proxy. It may call: {may}.",
        type="invalid_request_error",
        code="endpoint_not_allowed",
    )
