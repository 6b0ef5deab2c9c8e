"""What a managed miss reserves and the bound it is sent upstream with (pure, no I/O).

A reservation is a fixed part (prompt, input images, per-request fee, images at their per-image
price) plus completion tokens:

- the client set ``max_tokens``/``max_completion_tokens``: that many (at most the model's
  ``max_output_tokens``) per choice, and the request is forwarded as sent — except, for a key
  with a budget, a limit above the model's maximum is lowered to it (the reservation covers the
  maximum, so the upstream must not be allowed more, whatever the table's maximum is);
- it did not, and the key has a budget: the ledger grants, in its atomic reserve step, between
  the model's ``typical_completion_tokens`` and ``max_output_tokens`` per choice — as many as the
  budget covers — and the request is forwarded with ``max_tokens_param`` (or the endpoint's own
  ``Demand.bound_param``: the Responses API's ``max_output_tokens``) set to the grant, so the
  upstream cannot produce more than was reserved;
- otherwise (no budget): the typical completion, as bookkeeping; nothing is changed upstream.

The request itself is read by its endpoint into a ``Demand`` (prompt bound, input images,
choices, the limits the client set); this module only turns a demand and a price into money.
Only managed misses come here, never the cache-hit path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from proxy.budget.types import CompletionGrant
from proxy.obs.model_price import MICRO_PER_USD, ModelPrice
from proxy.obs.usage import Demand, positive_int

# Lua numbers are doubles: integers are exact below 2**53. Keep grant products below 2**52.
LUA_EXACT_LIMIT = 2**52


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    """The fixed part, the completion grant, and which request field carries the grant upstream."""

    fixed_micro: int
    grant: CompletionGrant | None  # None: an unpriced model (allowed explicitly), reserves 0
    bound_fields: tuple[str, ...] = ()  # set upstream to the granted units; (): forward untouched


def client_limit(limits: Mapping[str, object], model_max: int) -> int | None:
    """The completion limit the client asked for, per choice; None when it set none.

    A limit field present with a value the upstream will not take (a string, zero) counts as the
    model's maximum: the request is forwarded as sent, so the reservation must cover anything.
    """
    if not limits:
        return None
    valid = [positive_int(value) for value in limits.values()]
    return model_max if None in valid else max(v for v in valid if v is not None)


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
    price: ModelPrice | None, demand: Demand, *, budgeted: bool, image_price: ModelPrice | None = None
) -> ReservationPlan:
    """What to reserve for one managed miss of a model priced ``price`` (None: unpriced); the
    images of ``demand.image_model`` at ``image_price`` (None: unpriced, nothing reserved)."""
    if price is None:
        return ReservationPlan(0, None)
    if demand.image_model is None:
        per_image = price.per_image_usd
    else:
        per_image = image_price.per_image_usd if image_price is not None else Fraction(0)
    fixed = (
        demand.prompt_tokens * price.input_micro_per_token
        + demand.input_images * price.micro_per_input_image
        + price.per_request_usd * MICRO_PER_USD
        # An image the upstream does not bill in tokens costs the per-image price instead: which
        # one it will be is known only from the answer, so both are reserved.
        + demand.images * per_image * MICRO_PER_USD
    )
    limit = client_limit(demand.limits, price.max_output_tokens)
    typical = min(price.typical_completion_tokens, price.max_output_tokens)
    if limit is not None:
        floor = cap = min(limit, price.max_output_tokens)
    elif budgeted:
        floor, cap = typical, price.max_output_tokens
    else:
        floor = cap = typical
    num, den, cap = unit_price(price, demand.choices, cap)
    grant = CompletionGrant(min(floor, cap), cap, num, den)
    bound: tuple[str, ...] = ()
    if budgeted and limit is None and demand.boundable:
        bound = (demand.bound_param or price.max_tokens_param,)
    elif budgeted:
        bound = tuple(f for f, value in demand.limits.items() if (positive_int(value) or 0) > cap)
    return ReservationPlan(math.ceil(Fraction(fixed)), grant, bound)
