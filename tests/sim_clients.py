"""Fixtures for driving the simulated upstream directly with the openai SDK and raw HTTP.

from tests.sim_clients import sdk_fixture, small_upstream_fixture
upstream = pytest.fixture(small_upstream_fixture)
client = pytest.fixture(sdk_fixture)
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson

from proxy.sim.simulator import SimulatorState
from tests.fake_upstream import FakeUpstream, assert_valid_png

SMALL_IMAGE_BYTES = 4096  # fast tests: a few-kB PNG instead of 1.5 MB
API_KEY = "sk-sim-test"


async def small_upstream_fixture() -> AsyncIterator[FakeUpstream]:
    """Fixture body: a started simulator whose images are a few kB."""
    async with FakeUpstream(SimulatorState(image_bytes=SMALL_IMAGE_BYTES)) as upstream:
        yield upstream


async def sdk_fixture(upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    """Fixture body: the async SDK pointed at the simulator, no retries."""
    client = openai.AsyncOpenAI(base_url=upstream.url, api_key=API_KEY, max_retries=0, timeout=30)
    yield client
    await client.close()


def png_from_b64(b64: str) -> bytes:
    """The PNG inside a base64 string, checked structurally."""
    png = base64.b64decode(b64, validate=True)
    assert_valid_png(png)
    return png


async def post_raw(upstream: FakeUpstream, path: str, data: Any, **headers: str) -> tuple[int, Any]:
    """POST what the SDK would refuse to send; returns (status, parsed JSON body)."""
    payload = orjson.dumps(data) if isinstance(data, dict | list) else data
    sent = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", **headers}
    if isinstance(data, aiohttp.FormData):
        del sent["Content-Type"]  # aiohttp writes the multipart boundary itself
    async with (
        aiohttp.ClientSession() as session,
        session.post(upstream.url + path, data=payload, headers=sent) as response,
    ):
        return response.status, orjson.loads(await response.read())


def assert_openai_error(body: Any, *, param: str | None, code: str | None) -> str:
    """The body is `{"error": {message, type, param, code}}`; returns the message."""
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code), error
    assert isinstance(error["message"], str)
    assert error["message"]
    return str(error["message"])
