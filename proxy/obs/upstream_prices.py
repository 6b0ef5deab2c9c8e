"""Prices from the upstream's model list (LLMGateway ``GET /v1/models``), refreshed in the background.

The format, as LLMGateway's gateway builds it (theopenco/llmgateway,
``apps/gateway/src/models/models.ts``, ``modelSchema`` and the ``listModels`` handler)::

    {"data": [{"id": "gpt-4o", "aliases": ["..."], "free": false,
               "pricing": {"prompt": "2.5e-6", "completion": "10.0e-6",
                           "image": "0.00553", "request": "0", ...}, ...}]}

``prompt``/``completion`` are USD per token, ``image`` USD per input image, ``request`` USD per
call: the first provider's prices, written with JavaScript's ``toString`` (plain ``0.0000025``
or exponent ``2.5e-7`` decimals), parsed here with ``Decimal`` so they stay exact. A price the
catalogue does not know is written as ``"0"`` (``inputPrice?.toString() ?? "0"``), so an entry
whose prices are all zero counts as free only when it says ``free: true``; otherwise the model
is left to the tables below it. Aliases price the same as their model.

Loading never blocks start-up or a request: the first fetch starts with the app, each is bounded
in time and size, a failure is logged (clipped) and retried, and until a list arrives the
built-in table and the TOML prices apply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction

import aiohttp
import orjson

from proxy.obs.accounting import Accountant
from proxy.obs.logs import clip
from proxy.obs.model_price import BLANK_PRICE, MICRO_PER_USD, ModelPrice
from proxy.obs.pricing import PriceTable

log = logging.getLogger(__name__)

MAX_MODELS = 10_000
MAX_NAME_CHARS = 256
MAX_LIST_BYTES = 32 * 1024 * 1024
FETCH_TIMEOUT_S = 15.0
RETRY_AFTER_S = 60.0


def _usd(value: object) -> Fraction | None:
    """A price as an exact Fraction of USD; None when it is not a finite decimal >= 0."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = Decimal(repr(value))
    else:
        return None
    if not number.is_finite() or number < 0:
        return None
    return Fraction(number)


def _name(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value.strip()) <= MAX_NAME_CHARS:
        return value.strip().lower()
    return None


def _entry_price(entry: Mapping[str, object], base: ModelPrice) -> ModelPrice | None:
    pricing = entry.get("pricing")
    pricing = pricing if isinstance(pricing, Mapping) else {}
    if entry.get("free") is True:
        found: list[Fraction | None] = [Fraction(0)] * 4
    else:
        fields = (("prompt", None), ("completion", None), ("image", "0"), ("request", "0"))
        found = [_usd(pricing.get(name, absent)) for name, absent in fields]
        if not any(found):
            return None  # "0" everywhere is the catalogue's "price unknown", not a price
    if None in found:
        return None
    prompt, completion, image, request = (value or Fraction(0) for value in found)
    return replace(
        base,
        input_per_million_usd=prompt * MICRO_PER_USD,
        output_per_million_usd=completion * MICRO_PER_USD,
        per_input_image_usd=image,
        per_request_usd=request,
    )


def parse_model_list(doc: object, base_for: Callable[[str], ModelPrice | None]) -> dict[str, ModelPrice]:
    """Prices by lower-cased model name (aliases included) from a ``/v1/models`` document.

    ``base_for`` supplies what the list does not say (output limits, tokens per image) from the
    built-in table; models it does not know get the generic defaults. Entries that cannot be
    read are skipped, never guessed.
    """
    data = doc.get("data") if isinstance(doc, Mapping) else None
    if not isinstance(data, list):
        raise ValueError("the model list has no 'data' array")  # noqa: TRY004 - one error type for the loader
    prices: dict[str, ModelPrice] = {}
    aliases: list[tuple[str, ModelPrice]] = []
    for entry in data[:MAX_MODELS]:
        name = _name(entry.get("id")) if isinstance(entry, Mapping) else None
        if name is None:
            continue
        price = _entry_price(entry, base_for(name) or BLANK_PRICE)
        if price is None:
            continue
        prices[name] = price
        names = entry.get("aliases")
        if isinstance(names, list):
            aliases.extend((alias, price) for raw in names[:64] if (alias := _name(raw)))
    for alias, price in aliases:
        prices.setdefault(alias, price)  # a model's own entry beats another model's alias
    return prices


class UpstreamPrices:
    """Fetches the upstream's model list and swaps fresh prices into the accountant's table."""

    def __init__(
        self,
        accountant: Accountant,
        session: aiohttp.ClientSession,
        url: str,
        *,
        authorization: str | None,
        refresh_s: float,
        timeout_s: float = FETCH_TIMEOUT_S,
    ) -> None:
        self.accountant = accountant
        self.session = session
        self.url = url
        self.authorization = authorization
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.loads = 0  # successful loads so far

    async def _fetch(self) -> bytes:
        headers = {"Accept": "application/json"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        async with asyncio.timeout(self.timeout_s), self.session.get(self.url, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > MAX_LIST_BYTES:
                    raise ValueError(f"the model list is larger than {MAX_LIST_BYTES} bytes")
            return bytes(body)

    async def load(self) -> int:
        """Fetch once and install the prices; returns how many names they cover (raises on failure)."""
        builtin = PriceTable()
        prices = parse_model_list(orjson.loads(await self._fetch()), builtin.lookup)
        self.accountant.prices = self.accountant.prices.with_upstream(prices)
        self.loads += 1
        return len(prices)

    async def run(self) -> None:
        """Load now and every ``refresh_s``; a failure is logged and retried sooner."""
        while True:
            try:
                count = await self.load()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                # orjson.JSONDecodeError is a ValueError. The text may echo upstream bytes: clip it.
                log.warning(
                    "could not load prices from %s: %s", self.url, clip(f"{type(exc).__name__}: {exc}")
                )
                await asyncio.sleep(min(self.refresh_s, RETRY_AFTER_S))
                continue
            log.info("loaded prices of %d models from the upstream's model list", count)
            await asyncio.sleep(self.refresh_s)
