"""The admin API and its CLI: token checks, key lifecycle, spend ledger, cache purges."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from proxy.cli.keys import main as keys_cli
from tests.e2e_helpers import chat_body, chat_raw, send_raw
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import ADMIN_TOKEN, admin, create_key, key_status, managed_proxy
from tests.proxy_harness import ProxyServer, proxy_settings


@pytest.mark.parametrize("token", [None, "", "wrong-token", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]])
async def test_admin_api_rejects_missing_or_wrong_token(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, token: str | None
) -> None:
    """Every admin route answers 401 in OpenAI's shape without the exact admin token."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        replies = [
            await admin(proxy, "GET", "/keys", token=token),
            await admin(proxy, "POST", "/keys", {"alias": "x"}, token=token),
            await admin(proxy, "POST", "/cache/purge", {"namespace": "x"}, token=token),
        ]
        listed = await admin(proxy, "GET", "/keys")
    for reply in replies:
        assert reply.status == 401
        assert reply.json()["error"]["code"] == "invalid_admin_token"
    assert listed.json()["data"] == []


async def test_admin_api_is_off_without_a_token(fake_upstream: FakeUpstream, key_prefix: str) -> None:
    """No PROXY_ADMIN_TOKEN: the admin routes do not exist, whatever bearer is sent."""
    async with ProxyServer(proxy_settings(fake_upstream.url, None, key_prefix)) as proxy:
        reply = await send_raw(f"{proxy.base}/admin/keys", method="GET", api_key="anything")
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "admin_disabled"


async def test_key_lifecycle(fake_upstream: FakeUpstream, redis_url: str, key_prefix: str) -> None:
    """Create (secret shown once), list, get, update, reset and revoke a key."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(
            proxy, budget_usd=12.5, period="day", allowed_models=["gpt-*"], rpm=30, cache_namespace="team"
        )
        assert secret.startswith("sk-lcp-")
        assert len(secret) >= 7 + 43
        listed = (await admin(proxy, "GET", "/keys")).json()["data"]
        fetched = await key_status(proxy, key["id"])
        await chat_raw(proxy, chat_body("spend something"), api_key=secret)
        spent = await key_status(proxy, key["id"])
        updated = await admin(
            proxy, "PATCH", f"/keys/{key['id']}", {"budget_usd": 3, "allowed_models": [], "enabled": False}
        )
        disabled = await chat_raw(proxy, chat_body("spend something"), api_key=secret)
        reset = await admin(proxy, "POST", f"/keys/{key['id']}/reset")
        revoked = await admin(proxy, "POST", f"/keys/{key['id']}/revoke")
        missing = await admin(proxy, "GET", "/keys/key_nope")
    assert [k["id"] for k in listed] == [key["id"]]
    assert "secret" not in json.dumps(listed)
    assert (key["alias"], key["budget_usd"], key["period"], key["rpm"]) == ("team-a", 12.5, "day", 30)
    assert key["allowed_models"] == ["gpt-*"]
    assert fetched["remaining_usd"] == 12.5
    assert fetched["resets_at"].endswith("+00:00")
    assert spent["spend_usd"] > 0
    assert spent["requests"] == 1
    assert spent["remaining_usd"] == pytest.approx(12.5 - spent["spend_usd"])
    body = updated.json()
    assert (body["budget_usd"], body["allowed_models"], body["enabled"]) == (3, [], False)
    assert disabled.status == 401
    assert reset.json()["spend_usd"] == 0
    assert revoked.json()["revoked"] is True
    assert revoked.json()["revoked_at"] is not None
    assert missing.status == 404
    assert missing.json()["error"]["code"] == "key_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"alias": ""},
        {"alias": "a", "budget_usd": -1},
        {"alias": "a", "budget_usd": "lots"},
        {"alias": "a", "period": "week"},
        {"alias": "a", "allowed_models": [1]},
        {"alias": "a", "rpm": -5},
        {"alias": "a", "colour": "blue"},
    ],
)
async def test_create_refuses_bad_settings(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, body: dict[str, object]
) -> None:
    """Bad key settings get a 400 invalid_request_error and create nothing."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        reply = await admin(proxy, "POST", "/keys", body)
        listed = (await admin(proxy, "GET", "/keys")).json()["data"]
    assert reply.status == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert listed == []


async def test_usage_summarises_the_ledger(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """The usage endpoint sums settled charges by model, counting hits and savings."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, budget_usd=1)
        for text in ("a", "b", "a"):
            await chat_raw(proxy, chat_body(text), api_key=secret)
        usage = (await admin(proxy, "GET", f"/keys/{key['id']}/usage")).json()
        status = await key_status(proxy, key["id"])
        future = (await admin(proxy, "GET", f"/keys/{key['id']}/usage?since=2999-01-01T00:00:00")).json()
        bad = await admin(proxy, "GET", f"/keys/{key['id']}/usage?since=yesterday")
    assert usage["requests"] == 3
    assert usage["cache_hits"] == 1
    assert usage["cost_micro_usd"] == status["spend_micro_usd"]
    assert usage["cache_savings_usd"] > 0
    assert set(usage["by_model"]) == {"gpt-4o-mini"}
    assert future["requests"] == 0
    assert bad.status == 400


async def test_purge_by_key_namespace_and_hash(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Purging a key's namespace or one entry hash, right after an answer, makes the next request a miss.

    No pause: the purge waits for answers still being stored, and drops this replica's hot copies.
    """
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, budget_usd=1)
        first = await chat_raw(proxy, chat_body("purge me"), api_key=secret)
        by_key = await admin(proxy, "POST", "/cache/purge", {"key_id": key["id"]})
        second = await chat_raw(proxy, chat_body("purge me"), api_key=secret)
        by_hash = await admin(proxy, "POST", "/cache/purge", {"key_hash": second.headers["X-Cache-Key"]})
        third = await chat_raw(proxy, chat_body("purge me"), api_key=secret)
        both = await admin(proxy, "POST", "/cache/purge", {"key_id": key["id"], "namespace": "x"})
    assert first.headers["X-Cache"] == "MISS"
    assert by_key.json() == {"deleted": 1, "namespace": key["effective_cache_namespace"]}
    assert second.headers["X-Cache"] == "MISS"
    assert by_hash.json()["deleted"] == 1
    assert third.headers["X-Cache"] == "MISS"
    assert both.status == 400


async def test_cli_creates_and_reads_keys(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """``llm-cache-proxy keys create/get`` talk to the admin API and print its JSON."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        env = {"PROXY_ADMIN_URL": proxy.base, "PROXY_ADMIN_TOKEN": ADMIN_TOKEN}
        out = io.StringIO()
        argv = ["create", "--alias", "team-a", "--budget", "50", "--period", "month", "--models", "gpt-*"]
        code = await asyncio.to_thread(keys_cli, argv, env, out)
        created = json.loads(out.getvalue())
        got = io.StringIO()
        get_code = await asyncio.to_thread(keys_cli, ["get", created["id"]], env, got)
        denied = await asyncio.to_thread(keys_cli, ["--token", "wrong", "list"], env, io.StringIO())
        reply = await chat_raw(proxy, chat_body("via cli key"), api_key=created["secret"])
    assert (code, get_code, denied) == (0, 0, 1)
    assert (created["alias"], created["budget_usd"], created["period"]) == ("team-a", 50, "month")
    assert created["allowed_models"] == ["gpt-*"]
    assert json.loads(got.getvalue())["id"] == created["id"]
    assert reply.status == 200
