"""The console's gates: the session, CSRF and same-origin checks, and its security headers.

Every route but the login page, its form and the static files needs a session (401 otherwise,
in OpenAI's error shape like every other error of the proxy). A request that changes something
(any method but GET/HEAD) also needs

- the session's CSRF token in ``X-CSRF-Token``, compared in constant time, and
- a same-origin browser: ``Origin`` equal to this server's own origin, or, when a browser sends
  none (or ``null``: a privacy setting), ``Sec-Fetch-Site: same-origin``; neither: refused.

The own origin is ``{scheme}://{Host}`` where the scheme is ``https`` when the connection is TLS
(``request.secure``) or a front proxy says so (``X-Forwarded-Proto: https``). Trusting that header
here is safe: a cross-site page cannot set it on a browser's request, and a client that can set it
can set ``Origin`` too but has no victim's cookie. The same rule decides the cookie's ``Secure``
flag: a forged header only makes the cookie stricter.
"""

from __future__ import annotations

import hmac

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from proxy.console.sessions import Session
from proxy.errors import ProxyError
from proxy.state import CONSOLE_SESSIONS
from proxy.storage.base import StoreUnavailable, guarded

COOKIE = "lcp_console"
SAFE_METHODS = frozenset({"GET", "HEAD"})
# The session a guarded handler runs under.
SESSION: web.RequestKey[Session] = web.RequestKey("console_session")
# Routes anyone may reach: the login page and form, the static files (CSS/JS, no data).
PUBLIC = frozenset({"/ui", "/ui/login"})

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def is_tls(request: web.Request) -> bool:
    """Whether the browser talks to us over TLS (directly, or through a front proxy that says so)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def own_origin(request: web.Request) -> str:
    return f"{'https' if is_tls(request) else 'http'}://{request.host}"


def same_origin(request: web.Request) -> bool:
    """The browser says this request comes from one of our own pages."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin != "null":
        return hmac.compare_digest(origin.encode(), own_origin(request).encode())
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


def forbidden(message: str, code: str) -> ProxyError:
    return ProxyError(403, message, type="invalid_request_error", code=code)


async def current_session(request: web.Request) -> Session | None:
    """The session of the request's cookie, if it is open."""
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 128:
        return None
    return await request.config_dict[CONSOLE_SESSIONS].get(session_id)


@web.middleware
async def console_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session, then CSRF and origin for changes; store outages answer 503 (never a bypass)."""
    try:
        public = request.path in PUBLIC or request.path.startswith("/ui/static/")
        if request.method not in SAFE_METHODS and not same_origin(request):
            raise forbidden("Cross-origin request refused.", "cross_origin")
        if not public:
            session = await current_session(request)
            if session is None:
                raise ProxyError(401, "Log in to the console first.", code="console_login_required")
            if request.method not in SAFE_METHODS:
                sent = request.headers.get("X-CSRF-Token", "")
                if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                    raise forbidden("Missing or wrong CSRF token.", "csrf_failed")
            request[SESSION] = session
        async with guarded("console", None):  # the key and budget stores answer unbounded here
            return await handler(request)
    except StoreUnavailable as exc:
        raise ProxyError(
            503,
            f"The console's store failed: {type(exc.__cause__).__name__}.",
            type="server_error",
            code="store_unavailable",
        ) from None


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every console answer: strict CSP, no sniffing, no framing, no caching, no referrer."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    # same-origin, not no-referrer: with no-referrer chromium sends "Origin: null" on form posts.
    headers["Referrer-Policy"] = "same-origin"
    headers["Cache-Control"] = "no-store"
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
