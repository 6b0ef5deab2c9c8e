"""What a managed miss reserves and the bound it is sent upstream with (pure, no I/O).

A reservation is a fixed part (prompt, input images, per-request fee) plus completion tokens:

- the client set ``max_tokens``/``max_completion_tokens``: that many (at most the model's
  ``max_output_tokens``) per choice, and the request is forwarded as sent — except, for a key
  with a budget, a limit above the model's maximum is lowered to it (the reservation covers the
  maximum, so the upstream must not be allowed more, whatever the table's maximum is);
- it did not, and the key has a budget: the ledger grants, in its atomic reserve step, between
  the model's ``typical_completion_tokens`` and ``max_output_tokens`` per choice — as many as the
  budget covers — and the request is forwarded with ``max_tokens_param`` set to the grant, so
  the upstream cannot produce more than was reserved;
- otherwise (no budget): the typical completion, as bookkeeping; nothing is changed upstream.

Only managed misses come here, never the cache-hit path: the work is one walk over
``messages`` and, for non-ASCII bodies, one C-speed pass over the bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from proxy.budget.types import CompletionGrant
from proxy.obs.model_price import MICRO_PER_USD, ModelPrice

# Prompt tokens are bounded from the body's bytes (image data URLs excluded, counted per image):
# at most one token per 3 ASCII bytes and two per 3 non-ASCII bytes. English averages about
# 4 characters per token in OpenAI's cl100k/o200k and Anthropic's tokenizers, code and digits
# about 3 (digits are split in groups of at most three); a CJK character is 3 UTF-8 bytes and
# usually 1 token, rarely 2. bytes/4, the old rule, undercounted CJK by up to 2.7x. An
# adversarial prompt (one token per byte) can still exceed this bound: that is the estimation
# error the README's guarantee names, and the settle step charges the real count regardless.
ASCII_BYTES_PER_TOKEN = 3
NON_ASCII_TOKENS_PER_3_BYTES = 2
_ASCII = bytes(range(128))
# Lua numbers are doubles: integers are exact below 2**53. Keep grant products below 2**52.
LUA_EXACT_LIMIT = 2**52


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    """The fixed part, the completion grant, and which request field carries the grant upstream."""

    fixed_micro: int
    grant: CompletionGrant | None  # None: an unpriced model (allowed explicitly), reserves 0
    bound_fields: tuple[str, ...] = ()  # set upstream to the granted units; (): forward untouched


def _image_url(part: object) -> str | None:
    """The URL of an image part (``{"type": "image_url", "image_url": {"url": ...}}``)."""
    if not isinstance(part, Mapping):
        return None
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    return url if isinstance(url, str) else None


def count_images(messages: object) -> tuple[int, int]:
    """Images in the request's messages and the characters of their ``data:`` URLs.

    Both places an image can ride in: ``content`` parts (OpenAI vision input) and an assistant
    message's ``images`` (an image model's earlier answer sent back to edit it).
    """
    count = data_chars = 0
    if not isinstance(messages, Sequence):
        return 0, 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        for parts in (message.get("content"), message.get("images")):
            if not isinstance(parts, list):
                continue
            for part in parts:
                url = _image_url(part)
                if url is None:
                    continue
                count += 1
                if url.startswith("data:"):
                    data_chars += len(url)
    return count, data_chars


def prompt_token_bound(raw: bytes, image_chars: int) -> int:
    """Conservative prompt tokens of a body whose image data URLs span ``image_chars`` bytes."""
    # Data URLs are base64, all ASCII, so every non-ASCII byte is text.
    non_ascii = 0 if raw.isascii() else len(raw.translate(None, _ASCII))
    ascii_text = max(0, len(raw) - image_chars - non_ascii)
    return -(-ascii_text // ASCII_BYTES_PER_TOKEN) + -(-non_ascii * NON_ASCII_TOKENS_PER_3_BYTES // 3)


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


def client_limit(body: Mapping[str, Any], model_max: int) -> int | None:
    """The completion limit the client asked for, per choice; None when it set none.

    A limit field present with a value the upstream will not take (a string, zero) counts as the
    model's maximum: the request is forwarded as sent, so the reservation must cover anything.
    """
    limits = [body[f] for f in _LIMIT_FIELDS if body.get(f) is not None]
    if not limits:
        return None
    valid = [_positive_int(value) for value in limits]
    return model_max if None in valid else max(v for v in valid if v is not None)


def choices(body: Mapping[str, Any]) -> int:
    """``n``: alternatives generated, each up to the completion limit (invalid counts as 1)."""
    return _positive_int(body.get("n")) or 1


def unit_price(price: ModelPrice, n: int, cap: int) -> tuple[int, int, int]:
    """(numerator, denominator, cap): micro-USD of one token in each of ``n`` choices, exact or
    rounded up to a coarser fraction, and the cap, so that ``cap * num + den < 2**52``."""
    unit = price.output_micro_per_token * n
    num, den = unit.numerator, unit.denominator
    while cap * num + den >= LUA_EXACT_LIMIT and den > 1:
        den = max(1, den // 10)
        num = math.ceil(unit * den)
    if num and cap * num + den >= LUA_EXACT_LIMIT:  # absurd prices: fewer tokens, same rule
        cap = max(1, (LUA_EXACT_LIMIT - den - 1) // num)
    return num, den, cap


def plan_reservation(
    price: ModelPrice | None, raw: bytes, body: Mapping[str, Any], *, budgeted: bool
) -> ReservationPlan:
    """What to reserve for one managed miss of a model priced ``price`` (None: unpriced)."""
    if price is None:
        return ReservationPlan(0, None)
    images, image_chars = count_images(body.get("messages"))
    fixed = (
        prompt_token_bound(raw, image_chars) * price.input_micro_per_token
        + images * price.micro_per_input_image
        + price.per_request_usd * MICRO_PER_USD
    )
    limit = client_limit(body, price.max_output_tokens)
    typical = min(price.typical_completion_tokens, price.max_output_tokens)
    if limit is not None:
        floor = cap = min(limit, price.max_output_tokens)
    elif budgeted:
        floor, cap = typical, price.max_output_tokens
    else:
        floor = cap = typical
    num, den, cap = unit_price(price, choices(body), cap)
    grant = CompletionGrant(min(floor, cap), cap, num, den)
    bound: tuple[str, ...] = ()
    if budgeted and limit is None:
        bound = (price.max_tokens_param,)
    elif budgeted:
        bound = tuple(f for f in _LIMIT_FIELDS if (_positive_int(body.get(f)) or 0) > cap)
    return ReservationPlan(math.ceil(Fraction(fixed)), grant, bound)
