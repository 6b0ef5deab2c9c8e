"""Managed keys limited to some paid endpoints (``endpoints``), set by the admin API, the keys CLI
or the TOML config; a call outside the list is 403 ``endpoint_not_allowed`` before anything is
read, reserved or forwarded. Real requests through the proxy to the simulator, real Redis.
"""

from __future__ import annotations

import asyncio
import io
import json

import orjson
import pytest
import redis.asyncio as aioredis

from proxy.app import create_app
from proxy.cli.keys import main as keys_cli
from proxy.keys.settings import InvalidKeySettings, check_endpoints, validate_settings
from tests.e2e_helpers import RawReply, chat_body, send_raw
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import ADMIN_TOKEN, admin, create_key, key_status, managed_proxy
from tests.proxy_harness import ProxyServer, proxy_settings

EMBEDDING_MODEL = "text-embedding-3-small"
PAID = ("chat.completions", "images.generations", "images.edits", "embeddings")


async def _chat(proxy: ProxyServer, secret: str, text: str = "hello") -> RawReply:
    return await send_raw(f"{proxy.url}/chat/completions", chat_body(text), api_key=secret)


async def _embed(proxy: ProxyServer, secret: str) -> RawReply:
    body = {"model": EMBEDDING_MODEL, "input": ["a", "b"]}
    return await send_raw(f"{proxy.url}/embeddings", body, api_key=secret)


async def test_a_new_key_allows_every_paid_endpoint(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Without `endpoints` a key shows null and may call chat and embeddings alike."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        created, secret = await create_key(proxy)
        replies = [await _chat(proxy, secret), await _embed(proxy, secret)]
    assert created["endpoints"] is None
    assert [r.status for r in replies] == [200, 200]


async def test_an_endpoint_outside_the_list_is_refused_before_anything_happens(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A key for embeddings only: chat is 403 endpoint_not_allowed naming what the key may call;
    the upstream saw no chat call and the budget no request and no reservation."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        created, secret = await create_key(proxy, budget_usd=1, endpoints=["embeddings"])
        refused = await _chat(proxy, secret)
        allowed = await _embed(proxy, secret)
        status = await key_status(proxy, created["id"])
    assert created["endpoints"] == ["embeddings"]
    assert refused.status == 403, refused.body
    error = refused.json()["error"]
    assert error["code"] == "endpoint_not_allowed"
    assert error["type"] == "invalid_request_error"
    assert "chat.completions" in error["message"]
    assert "embeddings (POST /v1/embeddings)" in error["message"]
    assert "GET /v1/models" in error["message"]
    assert "images.generations" not in error["message"]
    assert fake_upstream.chat_calls == 0
    assert allowed.status == 200, allowed.body
    assert status["requests"] == 1  # the embeddings request only
    assert status["reserved_usd"] == 0


async def test_patch_changes_the_list_and_null_allows_all_again(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """PATCH endpoints takes effect on the next request; PATCH null restores every endpoint."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        created, secret = await create_key(proxy)
        narrowed = await admin(proxy, "PATCH", f"/keys/{created['id']}", {"endpoints": ["Chat.Completions "]})
        chat, embed = await _chat(proxy, secret), await _embed(proxy, secret)
        widened = await admin(proxy, "PATCH", f"/keys/{created['id']}", {"endpoints": None})
        embed_again = await _embed(proxy, secret)
    assert narrowed.json()["endpoints"] == ["chat.completions"]  # trimmed and lower-cased
    assert (chat.status, embed.status) == (200, 403)
    assert widened.json()["endpoints"] is None
    assert embed_again.status == 200


@pytest.mark.parametrize(
    "endpoints",
    [["chat.completions", "files"], "nope", [1], [""], ["x" * 65], ["chat.completions"] * 33, {"a": 1}],
)
async def test_unknown_or_malformed_endpoint_lists_are_400(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, endpoints: object
) -> None:
    """An unknown name or a malformed list is 400 with param `endpoints`; no key is created."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        reply = await admin(proxy, "POST", "/keys", {"alias": "x", "endpoints": endpoints})
        listing = await admin(proxy, "GET", "/keys")
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["param"] == "endpoints"
    assert listing.json()["data"] == []


async def test_the_400_for_an_unknown_name_lists_the_valid_ones(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """`files` is not a paid endpoint: the message names it and every endpoint the proxy serves."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        created, _ = await create_key(proxy)
        reply = await admin(proxy, "PATCH", f"/keys/{created['id']}", {"endpoints": ["files"]})
    message = reply.json()["error"]["message"]
    assert reply.status == 400
    assert "'files'" in message
    assert all(name in message for name in PAID)


async def test_a_record_written_before_the_field_allows_everything(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    """A key record without `endpoints` (an older proxy wrote it) reads as every paid endpoint."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        created, secret = await create_key(proxy, endpoints=["images.generations"])
        record_key = f"{key_prefix}:key:{created['id']}"
        record = orjson.loads(await redis_client.get(record_key))
        del record["endpoints"]
        await redis_client.set(record_key, orjson.dumps(record))
        shown = await key_status(proxy, created["id"])
        chat = await _chat(proxy, secret)
    assert shown["endpoints"] is None
    assert chat.status == 200


async def test_config_keys_take_an_endpoint_list(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A `[[keys]]` entry with endpoints = ["chat.completions"] may chat but not embed."""
    keys = ({"id": "cfg", "secret": "sk-config-key-with-endpoints", "endpoints": ["chat.completions"]},)
    async with managed_proxy(fake_upstream, redis_url, key_prefix, keys=keys) as proxy:
        chat = await _chat(proxy, "sk-config-key-with-endpoints")
        embed = await _embed(proxy, "sk-config-key-with-endpoints")
    assert (chat.status, embed.status) == (200, 403)
    assert embed.json()["error"]["code"] == "endpoint_not_allowed"


async def test_a_config_key_naming_an_unknown_endpoint_stops_the_start(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A typo in a config key's endpoints is an error when the app is built (nothing opened yet),
    naming the valid endpoints."""
    keys = ({"id": "cfg", "secret": "sk-config-key-typo", "endpoints": ["chat.completion"]},)
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, keys=keys)
    with pytest.raises(InvalidKeySettings, match=r"'chat\.completion'.*valid endpoints: chat\.completions"):
        create_app(settings)


def test_endpoint_names_are_checked_against_what_the_app_serves() -> None:
    """check_endpoints accepts null and known names, and lists the known ones for an unknown name."""
    check_endpoints(None, PAID)
    check_endpoints(("embeddings",), PAID)
    with pytest.raises(InvalidKeySettings, match=r"'responses'.*valid endpoints: chat\.completions"):
        check_endpoints(("responses",), PAID)
    assert validate_settings({"endpoints": ["embeddings", "EMBEDDINGS"]}) == {"endpoints": ("embeddings",)}
    assert validate_settings({"endpoints": []}) == {"endpoints": ()}


async def test_keys_cli_sets_and_clears_endpoints(fake_upstream: FakeUpstream, key_prefix: str) -> None:
    """`keys create --endpoints a b` sends the list; `keys update --all-endpoints` sends null."""
    async with managed_proxy(fake_upstream, None, key_prefix) as proxy:
        env = {"PROXY_ADMIN_URL": proxy.base, "PROXY_ADMIN_TOKEN": ADMIN_TOKEN}
        out = io.StringIO()
        argv = ["create", "--alias", "cli", "--endpoints", "embeddings", "--endpoints", "images.edits"]
        assert await asyncio.to_thread(keys_cli, argv, env, out) == 0, out.getvalue()
        created = json.loads(out.getvalue())
        out = io.StringIO()
        argv = ["update", created["id"], "--all-endpoints"]
        assert await asyncio.to_thread(keys_cli, argv, env, out) == 0, out.getvalue()
        updated = json.loads(out.getvalue())
        out = io.StringIO()
        bad = await asyncio.to_thread(keys_cli, ["create", "--alias", "t", "--endpoints", "files"], env, out)
    assert created["endpoints"] == ["embeddings", "images.edits"]
    assert updated["endpoints"] is None
    assert bad == 1
    assert "valid endpoints" in out.getvalue()
