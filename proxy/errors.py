"""One exception type for every error the proxy itself answers, rendered in OpenAI's shape."""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.obs.logs import clip

log = logging.getLogger(__name__)


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
    """400: the request path is one the proxy refuses to interpret (see ``paths.parse_target``)."""
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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render ProxyError and aiohttp's own HTTP errors as OpenAI JSON, so SDKs raise the right class."""
    try:
        return await handler(request)
    except ProxyError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        type_ = "invalid_request_error" if exc.status < 500 else "server_error"
        return web.Response(
            status=exc.status, body=error_body(exc.reason, type_), content_type="application/json"
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        # A bug must still answer in OpenAI's shape (SDKs then raise InternalServerError cleanly).
        log.exception("unhandled error on %s %s", request.method, clip(request.path))
        return web.Response(
            status=500,
            body=error_body("The proxy failed to handle the request.", "server_error", "proxy_error"),
            content_type="application/json",
        )
