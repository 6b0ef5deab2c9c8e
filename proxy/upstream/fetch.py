"""One upstream call read whole and not relayed: the answer is the proxy's to rebuild (a partly
cached batch answers with cached and fetched items merged, so nothing can go to the client live).

Failures map as in ``relay``: no answer → 502/504 raised; a 200 cut short or over the limit →
``invalid`` (the caller answers 502 and settles it as billed); any other status → its body kept
for the client and the flight.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from multidict import CIMultiDict

from proxy.errors import upstream_invalid_response
from proxy.obs.logs import clip
from proxy.upstream.relay import MissOutcome, post
from proxy.upstream.session import response_headers

log = logging.getLogger(__name__)


async def fetch_whole(
    session: aiohttp.ClientSession,
    *,
    url: str,
    body: bytes,
    headers: CIMultiDict[str],
    limit: int,
) -> tuple[CIMultiDict[str], MissOutcome]:
    """POST ``body``; the headers safe to pass on and the outcome (``raw``: a whole 200 body).

    Raises ProxyError (502/504) when the upstream fails before answering.
    """
    outcome = MissOutcome()
    started = time.perf_counter()
    upstream = await post(session, url, body, headers, outcome)
    kept = bytearray()
    cut: BaseException | None = None
    async with upstream:
        passed_on = response_headers(upstream.headers)
        try:
            async for chunk in upstream.content.iter_any():
                kept += chunk
                if len(kept) > limit:
                    cut = ValueError(f"answer over {limit} bytes")
                    break
        except (TimeoutError, aiohttp.ClientError) as exc:
            cut = exc
    outcome.upstream_seconds = time.perf_counter() - started
    if upstream.status != 200:
        outcome.error_kind = "status_5xx" if upstream.status >= 500 else "status_4xx"
        outcome.error_body = bytes(kept[:limit])
    elif cut is not None:
        log.warning("upstream 200 with an unusable body: %s", clip(repr(cut)))
        outcome.invalid = True
        outcome.error_kind = "timeout" if isinstance(cut, asyncio.TimeoutError) else "invalid_response"
        outcome.error_body = upstream_invalid_response().body()
    else:
        outcome.raw = bytes(kept)
    return passed_on, outcome
