"""The admin API under ``/admin/``: managed keys, their budgets and spend, and cache purges.

A sub-application with its own auth middleware: every route needs ``Authorization: Bearer
$PROXY_ADMIN_TOKEN`` (compared in constant time); with no token configured none exists. JSON in,
JSON out, errors in OpenAI's shape. The plaintext of a key is in the response to its creation
and nowhere else, ever.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.cache.keys import managed_namespace
from proxy.config import Secret
from proxy.errors import ProxyError, bad_request
from proxy.keys.auth import bearer_matches
from proxy.keys.periods import parse_period
from proxy.keys.settings import check_endpoints, validate_settings
from proxy.keys.store import InvalidKeySettings, ManagedKey, usd_to_micro
from proxy.obs.pricing import micro_to_usd
from proxy.state import AUTH, BUDGETS, CACHE, KEYSTORE, PAID_ENDPOINTS, SETTINGS
from proxy.storage.base import StoreUnavailable, guarded

if TYPE_CHECKING:  # the budget guard is the app's; its types are only named here
    from proxy.budget.types import BudgetStatus, UsageSummary

_USD_FIELDS = {"budget_usd": "budget_micro"}


@web.middleware
async def admin_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The admin sub-app's own gate: the admin token (constant time), and store outages as 503."""
    token = request.config_dict[SETTINGS].admin_token
    if token is None or not bearer_matches(request.headers, token):
        raise ProxyError(401, "A valid admin token is required.", code="invalid_admin_token")
    try:
        async with guarded("admin", None):  # the key and budget stores answer unbounded here
            return await handler(request)
    except StoreUnavailable as exc:
        raise ProxyError(
            503,
            f"The key/budget store failed: {type(exc.__cause__).__name__}.",
            type="server_error",
            code="store_unavailable",
        ) from None


async def _admin_off(request: web.Request) -> web.StreamResponse:
    raise ProxyError(404, "The admin API is off: PROXY_ADMIN_TOKEN is not set.", code="admin_disabled")


async def _no_such_route(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound  # after the token check, as for any other admin path


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _usd(micro: int | None) -> float | None:
    return None if micro is None else micro_to_usd(micro)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def key_json(key: ManagedKey, scope: str = "key") -> dict[str, Any]:
    """A key's settings as the API shows them (never a secret, not even its hash)."""
    return {
        "id": key.id,
        "object": "proxy.key",
        "alias": key.alias,
        "budget_usd": _usd(key.budget_micro),
        "period": key.period,
        "allowed_models": list(key.allowed_models),
        # null: every paid endpoint (also what a key created before the field existed allows).
        "endpoints": None if key.endpoints is None else list(key.endpoints),
        "cache_namespace": key.cache_namespace,
        "effective_cache_namespace": managed_namespace(key, "shared" if scope == "shared" else "key", None),
        "rpm": key.rpm,
        "enabled": key.enabled,
        "revoked": key.revoked_at is not None,
        "created_at": _iso(key.created_at),
        "revoked_at": _iso(key.revoked_at),
    }


def status_json(status: BudgetStatus, usage: UsageSummary) -> dict[str, Any]:
    """Spend, reservations, what is left, when the period resets, and what the cache saved."""
    return {
        "spend_usd": micro_to_usd(status.spent_micro),
        "spend_micro_usd": status.spent_micro,
        "reserved_usd": micro_to_usd(status.reserved_micro),
        "remaining_usd": _usd(status.remaining_micro),
        "period_id": status.period_id,
        "resets_at": _iso(status.resets_at),
        "requests": status.requests,
        "cache_hits": usage.cache_hits,
        "cache_savings_usd": micro_to_usd(usage.saved_micro),
    }


def usage_json(usage: UsageSummary) -> dict[str, Any]:
    """The ledger summary of one key, overall and per model."""

    def part(item: Any) -> dict[str, Any]:
        return {
            "requests": item.requests,
            "prompt_tokens": item.prompt_tokens,
            "completion_tokens": item.completion_tokens,
            "cost_usd": micro_to_usd(item.micro_usd),
            "cost_micro_usd": item.micro_usd,
            "cache_hits": item.cache_hits,
            "cache_savings_usd": micro_to_usd(item.saved_micro),
        }

    return {
        "key_id": usage.key_id,
        "since": _iso(usage.since),
        "truncated": usage.truncated,
        **part(usage),
        "by_model": {m.model: part(m) for m in usage.by_model},
    }


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _settings_from(request: web.Request, body: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """API field names to key-store ones; USD amounts become exact micro-USD; endpoint names are
    checked against the endpoints this proxy serves (400 listing the valid ones)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(f"Unknown field(s): {', '.join(unknown)}.", param=unknown[0])
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in _USD_FIELDS:
            try:
                out[_USD_FIELDS[name]] = None if value is None else usd_to_micro(value)
            except InvalidKeySettings as exc:
                raise bad_request(str(exc), param=name) from None
        elif name == "endpoints":
            try:
                names = validate_settings({name: value})[name]
                known = request.config_dict[PAID_ENDPOINTS]
                check_endpoints(names, known)  # type: ignore[arg-type]  # validate_settings made it a tuple or None
            except InvalidKeySettings as exc:
                raise bad_request(str(exc), param=name) from None
            out[name] = names
        else:
            out[name] = value
    return out


_CREATE_FIELDS = frozenset(
    {"alias", "budget_usd", "period", "allowed_models", "cache_namespace", "rpm", "endpoints"}
)
_UPDATE_FIELDS = _CREATE_FIELDS | {"enabled"}


async def _key_or_404(request: web.Request, key_id: str | None = None) -> ManagedKey:
    key = await request.config_dict[KEYSTORE].get(key_id or request.match_info["key_id"])
    if key is None:
        raise ProxyError(404, "No such key.", type="invalid_request_error", code="key_not_found")
    return key


async def _detail(request: web.Request, key: ManagedKey) -> dict[str, Any]:
    ledger = request.config_dict[BUDGETS].ledger
    status = await ledger.status(key.id, key.budget_micro, key.period)
    usage = await ledger.usage(key.id)
    return {**key_json(key, request.config_dict[SETTINGS].cache_scope), **status_json(status, usage)}


async def create_key(request: web.Request) -> web.Response:
    """``POST /admin/keys``: issue a key; the response is the only place its secret ever appears."""
    settings = _settings_from(request, await _body(request), _CREATE_FIELDS)
    alias = settings.pop("alias", None)
    if not isinstance(alias, str) or not alias.strip():
        raise bad_request("'alias' is required.", param="alias")
    try:
        period = parse_period(settings.pop("period", "month"))
        key, secret = await request.config_dict[KEYSTORE].create(
            alias, settings.pop("budget_micro", None), period, **settings
        )
    except (InvalidKeySettings, ValueError, TypeError) as exc:
        raise bad_request(str(exc)) from None
    request.config_dict[AUTH].key_created()
    return _json({**await _detail(request, key), "secret": secret}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    """``GET /admin/keys``: every key (revoked ones included) with its standing."""
    keys = await request.config_dict[KEYSTORE].list()
    return _json({"object": "list", "data": [await _detail(request, key) for key in keys]})


async def get_key(request: web.Request) -> web.Response:
    """``GET /admin/keys/{id}``: settings, spend, reserved, remaining, reset time, savings."""
    return _json(await _detail(request, await _key_or_404(request)))


async def update_key(request: web.Request) -> web.Response:
    """``PATCH /admin/keys/{id}``: change budget, models, endpoints, enabled, alias, period,
    namespace, rpm."""
    key = await _key_or_404(request)
    changes = _settings_from(request, await _body(request), _UPDATE_FIELDS)
    try:
        updated = await request.config_dict[KEYSTORE].update(key.id, **changes)
    except InvalidKeySettings as exc:
        raise bad_request(str(exc)) from None
    await request.config_dict[BUDGETS].publish(updated)
    return _json(await _detail(request, updated))


async def reset_key(request: web.Request) -> web.Response:
    """``POST /admin/keys/{id}/reset``: zero this period's spend (requests in flight still count)."""
    key = await _key_or_404(request)
    await request.config_dict[BUDGETS].ledger.reset(key.id, key.period)
    await request.config_dict[BUDGETS].publish(key)
    return _json(await _detail(request, key))


async def revoke_key(request: web.Request) -> web.Response:
    """``DELETE /admin/keys/{id}`` (or ``POST .../revoke``): refused by every replica from now on."""
    key = await _key_or_404(request)
    await request.config_dict[KEYSTORE].revoke(key.id)
    revoked = await request.config_dict[KEYSTORE].get(key.id)
    assert revoked is not None
    return _json(await _detail(request, revoked))


async def key_usage(request: web.Request) -> web.Response:
    """``GET /admin/keys/{id}/usage[?since=ISO-8601]``: the spend ledger summarised."""
    key = await _key_or_404(request)
    since = None
    if "since" in request.query:
        try:
            since = datetime.fromisoformat(request.query["since"])
        except ValueError:
            raise bad_request("'since' must be an ISO 8601 time.", param="since") from None
    return _json(usage_json(await request.config_dict[BUDGETS].ledger.usage(key.id, since)))


_PURGE_BY = ("namespace", "key_id", "key_hash", "all")
_DIGEST = re.compile(r"[0-9a-f]{64}")


async def purge_cache(request: web.Request) -> web.Response:
    """``POST /admin/cache/purge`` with one of ``namespace`` (matched literally, sub-namespaces
    included), ``key_id`` (its namespace), ``key_hash`` (one ``X-Cache-Key``) or ``"all": true``."""
    body = await _body(request)
    given = [name for name in _PURGE_BY if name in body]
    if len(given) != 1:
        raise bad_request("Give exactly one of 'namespace', 'key_id', 'key_hash' or 'all': true.")
    by, value = given[0], body[given[0]]
    if by == "all" and value is not True:
        raise bad_request('To purge every namespace send {"all": true}.', param="all")
    if by != "all" and (not isinstance(value, str) or not value):
        raise bad_request(f"'{by}' must be a non-empty string.", param=by)
    if by == "key_hash" and not _DIGEST.fullmatch(value.lower()):
        raise bad_request("'key_hash' must be the 64 hex digits of an X-Cache-Key.", param="key_hash")
    cache = request.config_dict[CACHE]  # a purge first waits for this replica's pending writes
    if by == "all":
        return _json({"deleted": await cache.purge_all(), "all": True})
    if by == "key_hash":
        digest = value.lower()
        return _json({"deleted": await cache.purge_digest(digest), "key_hash": digest})
    namespace = value
    if by == "key_id":
        key = await _key_or_404(request, value)
        namespace = managed_namespace(key, request.config_dict[SETTINGS].cache_scope, None)
    return _json({"deleted": await cache.purge_namespace(namespace), "namespace": namespace})


def create_admin_app(token: Secret | None) -> web.Application:
    """The admin API, mounted by the app factory at ``/admin/`` (``app.add_subapp``).

    With no admin token every ``/admin/*`` path answers 404 ``admin_disabled``; with one, every
    path (unknown ones too) needs it first. Handlers read the proxy's state through
    ``request.config_dict``: the parent app owns the key store, budgets and cache.
    """
    if token is None:
        off = web.Application()
        off.router.add_route("*", "/{tail:.*}", _admin_off)
        return off
    admin = web.Application(middlewares=[admin_auth_middleware])
    admin.router.add_post("/keys", create_key)
    admin.router.add_get("/keys", list_keys)
    admin.router.add_get("/keys/{key_id}", get_key)
    admin.router.add_patch("/keys/{key_id}", update_key)
    admin.router.add_delete("/keys/{key_id}", revoke_key)
    admin.router.add_post("/keys/{key_id}/revoke", revoke_key)
    admin.router.add_post("/keys/{key_id}/reset", reset_key)
    admin.router.add_get("/keys/{key_id}/usage", key_usage)
    admin.router.add_post("/cache/purge", purge_cache)
    admin.router.add_route("*", "/{tail:.*}", _no_such_route)
    return admin
