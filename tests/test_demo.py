"""`llm-cache-proxy demo`: proxy + simulated upstream in one command, with what to try printed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import ENDPOINTS
from proxy.cli.demo import (
    DEMO_KEY,
    EMBEDDINGS_BODY,
    IMAGE_MODEL,
    IMAGES_BODY,
    RESPONSES_BODY,
    instructions,
)
from tests.e2e_helpers import chat_body
from tests.proxy_process import ProxyProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def demo() -> Iterator[ProxyProcess]:
    """``python -m proxy demo --port <free>`` with the in-memory store (no PROXY_* from outside)."""
    process = ProxyProcess({}, command="demo", clean_env=True).launch()
    try:
        yield process
    finally:
        process.close()


def _costs(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in {"llm_proxy_cost_usd_total", "llm_proxy_cost_saved_usd_total"}:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def test_demo_serves_miss_then_hit_and_shows_cost(
    demo: ProxyProcess,
) -> None:
    """Image MISS then fast HIT, cost in /metrics, the printed SDK snippet works, SIGTERM exits 0."""
    await demo.wait_for_output("Press Ctrl-C")
    printed = demo.output()
    assert f"{demo.url}" in printed
    assert "curl" in printed
    assert "llm_proxy_cost" in printed
    url = f"{demo.url}/chat/completions"
    headers = {"Authorization": f"Bearer {DEMO_KEY}"}
    seen = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            started = time.perf_counter()
            async with session.post(
                url, json=chat_body("a red bicycle", IMAGE_MODEL), headers=headers
            ) as reply:
                assert reply.status == 200, await reply.text()
                body = await reply.json()
            seen.append((reply.headers["X-Cache"], time.perf_counter() - started))
            image = body["choices"][0]["message"]["images"][0]["image_url"]["url"]
            assert len(image) > 1_000_000  # a realistic ~1.5 MB PNG, base64-encoded
        async with session.get(f"{demo.base}/metrics") as reply:
            metrics = await reply.text()
    (first, miss_s), (second, hit_s) = seen
    assert (first, second) == ("MISS", "HIT")
    assert miss_s >= 1.5  # the simulated image model takes ~2 s
    assert hit_s < miss_s / 4
    costs = _costs(metrics)
    assert costs["llm_proxy_cost_usd_total"] == pytest.approx(0.0387, abs=1e-4)
    assert costs["llm_proxy_cost_saved_usd_total"] == pytest.approx(0.0387, abs=1e-4)
    snippet = re.search(r"python -c '(.+)'", printed)
    assert snippet is not None
    sdk = subprocess.run(
        [sys.executable, "-c", snippet.group(1)], capture_output=True, timeout=30, check=False
    )
    assert sdk.returncode == 0, sdk.stderr.decode()[-2000:]
    assert sdk.stdout.strip()  # the printed openai snippet got an answer

    assert demo.terminate() == 0, demo.output()[-3000:]
    assert "demo stopped" in demo.output()


async def test_demo_caches_the_images_api_embeddings_and_responses(demo: ProxyProcess) -> None:
    """The printed images.generate, embeddings and responses bodies, sent twice each through the
    demo's proxy: MISS then HIT (the same images, vectors, output); the printed SDK line for them runs."""
    await demo.wait_for_output("Press Ctrl-C")
    headers = {"Authorization": f"Bearer {DEMO_KEY}", "Content-Type": "application/json"}
    served = {endpoint.name: endpoint.route for endpoint in ENDPOINTS}
    sent = {"images.generations": IMAGES_BODY, "embeddings": EMBEDDINGS_BODY, "responses": RESPONSES_BODY}
    async with aiohttp.ClientSession() as session:
        for name, body in sent.items():
            replies = []
            for _ in range(2):
                url = f"{demo.base}{served.get(name, '/v1/' + name)}"
                async with session.post(url, data=body, headers=headers) as reply:
                    replies.append((reply.status, reply.headers.get("X-Cache"), await reply.read()))
            assert [status for status, _, _ in replies] == [200, 200], (name, replies[0][2][:300])
            if name in served:
                assert [cache for _, cache, _ in replies] == ["MISS", "HIT"], name
                # The same answer (an embeddings hit reports usage 0: nothing was billed for it).
                first, second = (json.loads(body) for _, _, body in replies)
                assert first.get("data", first.get("output")) == second.get("data", second.get("output"))
            else:
                # /v1/responses is forwarded uncached until its endpoint is registered (issue 13):
                # from then on the branch above pins MISS then HIT for it too.
                assert replies[0][1] is None
    snippets = re.findall(r"python -c '(.+)'", demo.output())
    sdk = subprocess.run([sys.executable, "-c", snippets[1]], capture_output=True, timeout=30, check=False)
    assert sdk.returncode == 0, sdk.stderr.decode()[-2000:]
    image_len, dimensions, _ = sdk.stdout.decode().split(" ", 2)
    assert int(image_len) > 1_000_000
    assert int(dimensions) > 0
    assert demo.terminate() == 0, demo.output()[-3000:]


def test_printed_sdk_snippet_and_curl_commands_are_well_formed() -> None:
    """The printed commands aim at the proxy, with the demo key, and the Python one-liner compiles."""
    text = instructions("http://127.0.0.1:8080", "http://127.0.0.1:1234/v1", "in-memory")
    assert text.count("curl ") == 7
    assert text.count(f"Bearer {DEMO_KEY}") == 6
    for path in ("chat/completions", "images/generations", "embeddings", "responses", "models"):
        assert f"http://127.0.0.1:8080/v1/{path} " in text, path
    for body in (IMAGES_BODY, EMBEDDINGS_BODY, RESPONSES_BODY):
        assert f"-d '{body}'" in text
        json.loads(body)
    snippets = re.findall(r"python -c '(.+)'", text)
    assert len(snippets) == 2
    for snippet in snippets:
        compile(snippet, "<demo snippet>", "exec")
        assert 'base_url="http://127.0.0.1:8080/v1"' in snippet
    assert all(
        call in snippets[1] for call in ("images.generate(", "embeddings.create(", "responses.create(")
    )
