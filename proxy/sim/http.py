"""HTTP plumbing shared by the simulator's routes (chat, Images, Embeddings, Responses).

Each endpoint module holds pure validation and payload code; this module turns them into aiohttp
handlers that honour the `SimulatorState` knobs every route honours (`valid_keys`, `fail_next`,
`hang`, `latency_s`/`image_latency_s`, `chunk_delay_s`, `cut_stream_after_chunks`), count calls
and record what arrived (`state.requests[name]`). Handlers are built per app with the state bound
(`route(state, ...)`), so these modules never import `proxy.sim.simulator` at run time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

if TYPE_CHECKING:
    from proxy.sim.simulator import SimulatorState

JSON = dict[str, Any]
HISTORY_LIMIT = 1000  # entries kept in each request history (chat_requests, auth_headers, requests[...])
_HANG_POLL_S = 0.02

Reader = Callable[[web.Request], Awaitable[JSON]]
Responder = Callable[[web.Request, "SimulatorState", JSON], Awaitable[web.StreamResponse]]


class InvalidRequest(Exception):
    """A client error in OpenAI's shape, raised by an endpoint's validation before any output."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.type = type_

    def response(self) -> web.Response:
        """The error as OpenAI sends it, so the SDK raises the matching exception class."""
        return error_response(self.status, self.message, self.type, self.code, self.param)


def error_response(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> web.Response:
    """`{"error": {"message", "type", "param", "code"}}` with `status`."""
    payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json_response(payload, status)


def json_response(payload: Any, status: int = 200) -> web.Response:
    """A JSON body serialised with orjson."""
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def remember(history: list[Any], item: Any) -> None:
    """Append to a bounded history (the oldest entries go first)."""
    history.append(item)
    if len(history) > HISTORY_LIMIT:
        del history[: len(history) - HISTORY_LIMIT]


def count_tokens(text: str) -> int:
    """Tokens of `text` as the simulator counts them: four characters each, at least one."""
    return max(1, len(text) // 4)


async def read_json(request: web.Request) -> JSON:
    """The body as a JSON object, or a 400 as OpenAI answers malformed bodies."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def denied(state: SimulatorState, request: web.Request) -> web.Response | None:
    """401 when keys are restricted (`valid_keys`) and the bearer is not one of them."""
    if state.valid_keys is None:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip() in state.valid_keys:
        return None
    return error_response(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


def route(state: SimulatorState, name: str, respond: Responder, read: Reader = read_json) -> Handler:
    """A handler: count the call as `name`, check the bearer, read and record the body, respond.

    The record is kept before validation, so tests see exactly what reached the upstream, bad
    input included; an `InvalidRequest` from reading or responding becomes its 400.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        state.calls[name] += 1
        remember(state.auth_headers, request.headers.get("Authorization"))
        if (refusal := denied(state, request)) is not None:
            return refusal
        try:
            body = await read(request)
            remember(state.requests[name], body)
            return await respond(request, state, body)
        except InvalidRequest as error:
            return error.response()

    return handle


async def answer_delay(state: SimulatorState, *, image: bool) -> web.Response | None:
    """Wait as long as an answer takes; the queued failure (`fail_next`) if there is one.

    The failure belongs to the request that arrived first and comes after the same latency as
    an answer would (a leader's error must not beat its followers to the proxy). `hang` holds
    the answer until switched off; `image_latency_s` is added for image models.
    """
    failure = state.fail_next.pop(0) if state.fail_next else None
    # A plain bool that tests flip is the contract, so polling it is the point here.
    while state.hang:  # noqa: ASYNC110
        await asyncio.sleep(_HANG_POLL_S)
    delay = state.latency_s + (state.image_latency_s if image else 0.0)
    if delay > 0:
        await asyncio.sleep(delay)
    return None if failure is None else json_response(failure[1], failure[0])


async def cut_stream(
    request: web.Request, response: web.StreamResponse, *, abort: bool
) -> web.StreamResponse:
    """End a stream early, as a dying upstream would: a dropped connection or a clean end."""
    if abort and request.transport is not None:
        request.transport.abort()
        # Nothing more can be written; stop the handler without aiohttp finishing the body.
        raise asyncio.CancelledError
    await response.write_eof()
    return response


def sse_event(event: JSON) -> bytes:
    """One event framed as the Images and Responses APIs send it: `event:` names its `type`."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def write_events(
    request: web.Request, state: SimulatorState, events: Iterable[JSON]
) -> web.StreamResponse:
    """Stream `events` (no `[DONE]`: these APIs end with their last event and the body's end).

    `chunk_delay_s` paces the events and `cut_stream_after_chunks` ends the stream early, by a
    dropped connection (`cut_stream_abort`) or a clean end without the final event.
    """
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    cut = state.cut_stream_after_chunks
    for sent, event in enumerate(events):
        if cut is not None and sent >= cut:
            return await cut_stream(request, response, abort=state.cut_stream_abort)
        if sent and state.chunk_delay_s > 0:
            await asyncio.sleep(state.chunk_delay_s)
        await response.write(sse_event(event))
    await response.write_eof()
    return response
