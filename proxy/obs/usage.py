"""The inputs of a price: what a request may consume (``Demand``) and what an answer did (``Usage``).

Endpoints produce them (each knows where its API keeps prompts, images and limits); accounting and
budgets consume them without knowing which API a request was for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def positive_int(value: object) -> int | None:
    """``value`` when it is a JSON integer above 0 (``true`` is not one), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response (0 where the upstream did not say), and the request's images."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0  # generated
    input_images: int = 0  # sent in the request

    @classmethod
    def from_mapping(cls, usage: Mapping[str, Any] | None, images: int = 0, input_images: int = 0) -> Usage:
        """Read an OpenAI ``usage`` object defensively: upstreams omit or null fields."""
        usage = usage or {}

        def count(name: str) -> int:
            value = usage.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

        return cls(count("prompt_tokens"), count("completion_tokens"), images, input_images)


@dataclass(frozen=True, slots=True)
class Demand:
    """The most one request may cost, in the units a price counts, read from the request alone.

    ``limits`` are the completion-limit fields the client set (name → value as sent, valid or not,
    in the order a bound is applied); ``boundable`` says whether the endpoint takes an injected
    completion bound at all (chat does; an image or embedding request does not).
    """

    prompt_tokens: int
    input_images: int = 0
    choices: int = 1
    limits: Mapping[str, object] = field(default_factory=dict)
    boundable: bool = True
