"""A simulated OpenAI-compatible upstream (LLMGateway flavour) over a real socket.

Used as the fake upstream in tests, by `llm-cache-proxy demo` and by the benchmark. Answers are
deterministic (identical requests get identical content and PNGs) so cache behaviour can be
asserted byte for byte; `SimulatorState` knobs let tests inject latency, errors and cut streams.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from proxy.sim.embeddings import embeddings_route
from proxy.sim.http import answer_delay, cut_stream, denied, error_response, json_response, remember
from proxy.sim.image_edits import edits_route
from proxy.sim.images import generations_route
from proxy.sim.models import model_list
from proxy.sim.payloads import (
    Completion,
    build_completion,
    is_image_model,
    png_data_url,
)
from proxy.sim.responses import response_get_route, responses_route

JSON = dict[str, Any]
_IMAGE_CACHE_ENTRIES = 16  # 16 x ~2 MB data URLs at most
_MAX_REQUEST_BYTES = 128 * 1024 * 1024  # image-input requests are big; aiohttp's default is 1 MB


@dataclass(slots=True)
class SimulatorState:
    """The simulator's knobs and observations; mutable on purpose so tests flip them live.

    `latency_s` delays every chat answer, `image_latency_s` is added for image models;
    `hang` (chat only) waits until cancelled or switched off. `calls` counts "chat", "models"
    and, for other routes, the request path. `in_flight`/`max_in_flight` gauge chat calls.
    `completion_tokens` makes every text answer that long (a model that never stops), cut
    with `finish_reason: "length"` at `max_tokens`/`max_completion_tokens` as a real one is.

    The Images, Embeddings and Responses routes (`sim_images`, `sim_image_edits`,
    `sim_embeddings`, `sim_responses`) count `calls["images"]`, `["images_edits"]`,
    `["embeddings"]`, `["responses"]`, `["responses_get"]` and record each body they read in
    `requests[<that name>]`; `images_usage` False drops `usage` from GPT image answers;
    `stored_responses` keeps the newest `responses_kept` responses by id.
    """

    latency_s: float = 0.0
    image_latency_s: float = 0.0
    chunk_delay_s: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    chat_requests: list[JSON] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    valid_keys: set[str] | None = None
    fail_next: list[tuple[int, JSON]] = field(default_factory=list)
    cut_stream_after_chunks: int | None = None
    # True: drop the TCP connection (client sees a broken chunked body); False: end the body
    # cleanly but without `data: [DONE]`.
    cut_stream_abort: bool = True
    hang: bool = False
    image_bytes: int = 1_500_000
    completion_tokens: int | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    image_cache: dict[tuple[str, int], str] = field(default_factory=dict, repr=False)
    requests: defaultdict[str, list[JSON]] = field(default_factory=lambda: defaultdict(list), repr=False)
    images_usage: bool = True
    responses_kept: int = 100
    stored_responses: dict[str, JSON] = field(default_factory=dict, repr=False)
    conversation_turns: Counter[str] = field(default_factory=Counter)

    def image_url(self, seed: str) -> str:
        """The PNG data URL for `seed` at the current size, generated once while cached."""
        key = (seed, self.image_bytes)
        url = self.image_cache.get(key)
        if url is None:
            url = png_data_url(seed, self.image_bytes)
            if len(self.image_cache) >= _IMAGE_CACHE_ENTRIES:
                self.image_cache.pop(next(iter(self.image_cache)))
            self.image_cache[key] = url
        return url


STATE_KEY = web.AppKey("simulator_state", SimulatorState)


def _validation_error(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "'model' is a required string."
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "'messages' must be a list of objects."
    if not isinstance(body.get("stream", False), bool):
        return "'stream' must be a boolean."
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 16:
        return "'n' must be an integer between 1 and 16."
    return None


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.calls["chat"] += 1
    remember(state.auth_headers, request.headers.get("Authorization"))
    if (refusal := denied(state, request)) is not None:
        return refusal
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error_response(400, "The request body is not valid JSON.", "invalid_request_error")
    if (problem := _validation_error(body)) is not None:
        return error_response(400, problem, "invalid_request_error")
    remember(state.chat_requests, body)
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        if (failure := await answer_delay(state, image=is_image_model(body["model"]))) is not None:
            return failure
        completion = build_completion(body, state.calls["chat"], state.image_url, state.completion_tokens)
        if body.get("stream", False):
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            return await _stream(request, state, completion, include_usage=usage)
        return json_response(completion.to_response())
    finally:
        state.in_flight -= 1


async def _stream(
    request: web.Request, state: SimulatorState, completion: Completion, *, include_usage: bool
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    cut = state.cut_stream_after_chunks
    for sent, chunk in enumerate(completion.to_chunks(include_usage=include_usage)):
        if cut is not None and sent >= cut:
            return await cut_stream(request, response, abort=state.cut_stream_abort)
        if sent and state.chunk_delay_s > 0:
            await asyncio.sleep(state.chunk_delay_s)
        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.calls["models"] += 1
    if (refusal := denied(state, request)) is not None:
        return refusal
    return json_response(model_list(int(time.time())))


async def _echo(request: web.Request) -> web.Response:
    """Any other /v1 route: report what arrived, so forwarding tests can check it."""
    state = request.app[STATE_KEY]
    state.calls[request.path] += 1
    if (refusal := denied(state, request)) is not None:
        return refusal
    body = await request.read()
    return json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "body_len": len(body),
            "headers": {str(name): value for name, value in request.headers.items()},
        }
    )


def create_simulator_app(state: SimulatorState) -> web.Application:
    """The simulated upstream as an aiohttp app; `state` is shared with the caller."""
    app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
    app[STATE_KEY] = state
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/images/generations", generations_route(state))
    app.router.add_post("/v1/images/edits", edits_route(state))
    app.router.add_post("/v1/embeddings", embeddings_route(state))
    app.router.add_post("/v1/responses", responses_route(state))
    app.router.add_get("/v1/responses/{response_id}", response_get_route(state))
    app.router.add_route("*", "/v1/{tail:.*}", _echo)
    return app


async def start_simulator(
    state: SimulatorState, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve the simulator; returns the runner (call `cleanup()`) and the base URL ending in /v1."""
    # Cancel handlers whose client left (timeout tests), and don't wait long on shutdown.
    runner = web.AppRunner(create_simulator_app(state), handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    return runner, f"http://{bound[0]}:{bound[1]}/v1"
