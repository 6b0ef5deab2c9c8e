"""``llm-cache-proxy demo``: the proxy in front of the built-in simulated upstream.

A newcomer without an API key or network sees misses, hits and cost metrics within a minute:
the simulator answers like a real gateway (slow images, realistic token usage, ~1.5 MB PNGs),
so the difference a cache hit makes is visible in wall-clock time and in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from dataclasses import dataclass
from typing import TextIO

from aiohttp import web

from proxy.app import create_app
from proxy.config import Settings
from proxy.obs.logs import configure_logging
from proxy.sim.simulator import SimulatorState, start_simulator
from proxy.web.server import ProxyRunner

DEMO_KEY = "sk-demo"
TEXT_MODEL = "gpt-4o-mini"
IMAGE_MODEL = "gemini-2.5-flash-image-preview"
# The other cached endpoints, as printed in "what to try" (tests/test_demo.py sends these bodies).
IMAGES_BODY = '{"model": "gpt-image-1", "prompt": "A lighthouse at dusk"}'
EMBEDDINGS_BODY = (
    '{"model": "text-embedding-3-small", "input": ["cached per item", "so a new batch reuses these"]}'
)
RESPONSES_BODY = '{"model": "gpt-4o-mini", "input": "Write a haiku about caches."}'


@dataclass(frozen=True, slots=True)
class DemoProfile:
    """How the simulated upstream behaves: roughly what a real gateway takes and returns."""

    text_s: float = 0.3
    image_s: float = 2.0
    image_bytes: int = 1_500_000

    def state(self) -> SimulatorState:
        """Simulator knobs for this profile (the simulator adds image latency to text latency)."""
        return SimulatorState(
            latency_s=self.text_s,
            image_latency_s=max(self.image_s - self.text_s, 0.0),
            image_bytes=self.image_bytes,
        )


def instructions(base: str, upstream_url: str, store: str) -> str:
    """What to try, printed once the proxy listens; ``base`` is ``http://host:port``."""
    chat = f"{base}/v1/chat/completions"
    auth = f'-H "Authorization: Bearer {DEMO_KEY}" -H "Content-Type: application/json"'
    text_body = f'{{"model": "{TEXT_MODEL}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
    image_body = f'{{"model": "{IMAGE_MODEL}", "messages": [{{"role": "user", "content": "A red bicycle"}}]}}'
    sdk = (
        f'from openai import OpenAI; client = OpenAI(base_url="{base}/v1", api_key="{DEMO_KEY}"); '
        f'reply = client.chat.completions.create(model="{TEXT_MODEL}", '
        f'messages=[{{"role": "user", "content": "Hello!"}}]); print(reply.choices[0].message.content)'
    )
    more_sdk = (
        f'from openai import OpenAI; client = OpenAI(base_url="{base}/v1", api_key="{DEMO_KEY}"); '
        'image = client.images.generate(model="gpt-image-1", prompt="A lighthouse at dusk"); '
        'vectors = client.embeddings.create(model="text-embedding-3-small", input=["cached per item"]); '
        'reply = client.responses.create(model="gpt-4o-mini", input="Write a haiku about caches."); '
        "print(len(image.data[0].b64_json), len(vectors.data[0].embedding), reply.output_text)"
    )
    show = "-sS -o /dev/null -D - -w 'time: %{time_total}s\\n'"
    headers_only = "| grep -iE '^x-cache|^time:'"
    return f"""
llm-cache-proxy demo
  proxy:     {base}/v1  (cache: {store})
  upstream:  {upstream_url}  (simulated: text ~0.3 s, images ~2 s and ~1.5 MB)

Try it (run each command twice: the first is a MISS, the second a HIT, much faster):

  # text
  curl -sS {chat} {auth} \\
    -d '{text_body}' -D -

  # image (the body is a ~2 MB base64 PNG, so only headers and timing are shown)
  curl {show} {chat} {auth} \\
    -d '{image_body}' | grep -iE '^x-cache:|^time:'

  # the Images API, as client.images.generate sends it (b64_json PNGs, stored once as bytes)
  curl {show} {base}/v1/images/generations {auth} \\
    -d '{IMAGES_BODY}' {headers_only}

  # embeddings, cached per input item (a later batch sends upstream only the inputs not seen yet)
  curl {show} {base}/v1/embeddings {auth} \\
    -d '{EMBEDDINGS_BODY}' {headers_only}

  # the Responses API (add "stream": true to get the same answer as events)
  curl -sS {base}/v1/responses {auth} \\
    -d '{RESPONSES_BODY}' -D -

  # the model list, cached per caller for PROXY_MODELS_TTL seconds
  curl -sS {base}/v1/models -H "Authorization: Bearer {DEMO_KEY}" -o /dev/null -D - | grep -i '^x-cache:'

  # the openai SDK: only base_url changes (pip install openai)
  python -c '{sdk}'
  python -c '{more_sdk}'

  # what it cost, and what the cache saved
  curl -s {base}/metrics | grep llm_proxy_cost

Press Ctrl-C to stop.
"""


async def run_demo(
    settings: Settings,
    stop: asyncio.Event,
    out: TextIO,
    profile: DemoProfile = DemoProfile(),
) -> None:
    """Serve simulator + proxy until ``stop`` is set; the simulator's URL replaces the upstream."""
    sim_runner, sim_url = await start_simulator(profile.state())
    proxy_settings = dataclasses.replace(settings, upstream_url=sim_url)
    runner = ProxyRunner(
        create_app(proxy_settings), header_timeout=proxy_settings.header_timeout, shutdown_timeout=2.0
    )
    try:
        await runner.setup()
        await web.TCPSite(runner, proxy_settings.host, proxy_settings.port).start()
        host, port = runner.addresses[0][:2]
        store = "redis" if proxy_settings.redis_url else "in-memory"
        print(instructions(f"http://{host}:{port}", sim_url, store), file=out, flush=True)
        await stop.wait()
    finally:
        await runner.stop(2.0)
        await sim_runner.cleanup()


async def _until_signalled(settings: Settings, out: TextIO) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await run_demo(settings, stop, out)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)


def demo(settings: Settings, out: TextIO) -> int:
    """Run the demo until Ctrl-C or SIGTERM; returns the exit status."""
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_until_signalled(settings, out))
    except OSError as exc:  # most often: the port is taken (PROXY_PORT / --port picks another)
        print(f"llm-cache-proxy demo: cannot listen on {settings.host}:{settings.port}: {exc}", file=out)
        return 1
    print("demo stopped", file=out, flush=True)
    return 0
