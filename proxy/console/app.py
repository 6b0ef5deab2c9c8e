"""The console sub-application, mounted at ``/ui`` by the app factory (like the admin API).

Pages: ``GET /ui`` (the login form without a session, the console with one), ``POST /ui/login``,
``POST /ui/logout``, ``/ui/static/console.{js,css}``; data under ``/ui/api/`` (``console.api``).
Without ``PROXY_ADMIN_TOKEN`` every ``/ui/*`` path answers 404.
"""

from __future__ import annotations

import html
from importlib import resources

from aiohttp import web

from proxy.config import Secret
from proxy.console import api
from proxy.console.guard import COOKIE, console_guard, current_session, is_tls, security_headers
from proxy.console.sessions import SESSION_S
from proxy.errors import ProxyError
from proxy.keys.auth import secret_matches
from proxy.state import CONSOLE_SESSIONS, LOGIN_LIMITER, SETTINGS
from proxy.web import admin

_FORM_MAX_BYTES = 4096
_STATIC_TYPES = {"console.js": "text/javascript", "console.css": "text/css"}
_PAGES: web.AppKey[dict[str, str]] = web.AppKey("console_pages")


def _read_static() -> dict[str, str]:
    folder = resources.files("proxy.console") / "static"
    return {
        name: (folder / name).read_text("utf-8") for name in (*_STATIC_TYPES, "login.html", "console.html")
    }


def _html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)


def _login_page(request: web.Request, error: str = "", status: int = 200, **headers: str) -> web.Response:
    page = request.app[_PAGES]["login.html"].replace("{error}", html.escape(error))
    return _html(page, status, headers)


async def index_page(request: web.Request) -> web.Response:
    """``GET /ui``: the console for a session, else the login form (no trailing slash: the path
    guard refuses empty segments everywhere)."""
    session = await current_session(request)
    if session is None:
        return _login_page(request)
    page = request.app[_PAGES]["console.html"].replace("{csrf}", html.escape(session.csrf))
    return _html(page)


async def login(request: web.Request) -> web.Response:
    """``POST /ui/login`` (form field ``token``): a session cookie, or the form again with an error."""
    limiter = request.config_dict[LOGIN_LIMITER]
    address = request.remote or "unknown"
    wait = limiter.retry_after(address)
    if wait:
        error = f"Too many wrong tokens. Try again in {wait} s."
        return _login_page(request, error, 429, **{"Retry-After": str(wait)})
    if request.content_length is None or request.content_length > _FORM_MAX_BYTES:
        return _login_page(request, "The form is too large.", 413)
    form = await request.post()
    token = request.config_dict[SETTINGS].admin_token
    given = form.get("token")
    if token is None or not isinstance(given, str) or not secret_matches(given, token):
        limiter.failed(address)
        return _login_page(request, "Wrong admin token.", 401)
    session_id, _ = await request.config_dict[CONSOLE_SESSIONS].open()
    response = web.Response(status=303, headers={"Location": "/ui"})
    response.set_cookie(
        COOKIE,
        session_id,
        path="/ui",
        max_age=SESSION_S,
        httponly=True,
        samesite="Strict",
        secure=is_tls(request),
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """``POST /ui/logout`` (CSRF-checked by the guard): the session ends on every replica."""
    session_id = request.cookies.get(COOKIE, "")
    await request.config_dict[CONSOLE_SESSIONS].close(session_id)
    response = web.Response(status=204)
    response.del_cookie(COOKIE, path="/ui", httponly=True, samesite="Strict", secure=is_tls(request))
    return response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = _STATIC_TYPES.get(name)
    if kind is None:
        raise web.HTTPNotFound
    return web.Response(text=request.app[_PAGES][name], content_type=kind)


async def _console_off(request: web.Request) -> web.StreamResponse:
    raise ProxyError(404, "The console is off: PROXY_ADMIN_TOKEN is not set.", code="console_disabled")


async def _no_such_route(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound  # after the session check, as for any other console path


def create_console_app(token: Secret | None) -> web.Application:
    """The console, or (no admin token) a sub-app that answers 404 to every ``/ui/*`` path."""
    if token is None:
        off = web.Application()
        off.router.add_route("*", "/{tail:.*}", _console_off)
        return off
    ui = web.Application(middlewares=[console_guard])
    ui[_PAGES] = _read_static()
    ui.on_response_prepare.append(security_headers)
    ui.router.add_get("", index_page)
    ui.router.add_post("/login", login)
    ui.router.add_post("/logout", logout)
    ui.router.add_get("/static/{name}", static)
    ui.router.add_get("/api/overview", api.overview)
    ui.router.add_get("/api/images", api.images)
    ui.router.add_post("/api/images/purge", api.purge_image)
    ui.router.add_get("/api/thumbs/{sha256}", api.thumb)
    ui.router.add_get("/api/blobs/{sha256}", api.full_image)
    # The admin API's own handlers: one validation, one answer shape, for both.
    ui.router.add_get("/api/keys", admin.list_keys)
    ui.router.add_post("/api/keys", admin.create_key)
    ui.router.add_patch("/api/keys/{key_id}", admin.update_key)
    ui.router.add_post("/api/keys/{key_id}/revoke", admin.revoke_key)
    ui.router.add_route("*", "/{tail:.*}", _no_such_route)
    return ui
