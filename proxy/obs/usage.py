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
    # Of ``prompt_tokens``, those that are images (GPT image models bill them at their own price).
    image_prompt_tokens: int = 0
    # Counted from a complete answer (the Images API's ``data``): priced even when the upstream
    # reported no ``usage``, since the answer itself shows what was billed (its images).
    from_answer: bool = False
    # The model that made the images when it is not the one that answered (the Responses API's
    # ``image_generation`` tool: its ``model``, gpt-image-1 by default). The token counts never
    # bill those images: each costs that model's ``per_image``.
    image_model: str | None = None

    @property
    def images_in_tokens(self) -> bool:
        """Whether the token counts bill the generated images: an upstream that reports completion
        tokens for an image answer billed the images in them (Gemini: 1,290 per image; GPT image
        models: their output tokens), so no per-image price is added. Images of an answer without
        completion tokens (an Images API answer without ``usage``) cost the model's ``per_image``;
        images of another model (``image_model``) are never in the tokens."""
        return self.completion_tokens > 0 and self.image_model is None

    @classmethod
    def from_mapping(cls, usage: Mapping[str, Any] | None, images: int = 0, input_images: int = 0) -> Usage:
        """Read an OpenAI ``usage`` object defensively: upstreams omit or null fields. The Images
        and Responses APIs name the counts ``input_tokens``/``output_tokens``."""
        usage = usage or {}

        def count(*names: str) -> int:
            for name in names:
                value = usage.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
            return 0

        return cls(
            count("prompt_tokens", "input_tokens"),
            count("completion_tokens", "output_tokens"),
            images,
            input_images,
        )


@dataclass(frozen=True, slots=True)
class Demand:
    """The most one request may cost, in the units a price counts, read from the request alone.

    ``limits`` are the completion-limit fields the client set (name → value as sent, valid or not,
    in the order a bound is applied); ``boundable`` says whether the endpoint takes an injected
    completion bound at all (chat does; an image or embedding request does not). ``images`` are
    the images the answer may hold (the Images API's ``n``), reserved at the model's per-image price.
    """

    prompt_tokens: int
    input_images: int = 0
    choices: int = 1
    limits: Mapping[str, object] = field(default_factory=dict)
    boundable: bool = True
    images: int = 0
    # The model whose ``per_image`` the images are reserved at, when it is not the request's
    # (the Responses API's image tool, ``Usage.image_model``).
    image_model: str | None = None
    # The request field a budget's completion bound is sent in when the API names its own (the
    # Responses API: ``max_output_tokens``); None: the model's ``max_tokens_param`` (chat).
    bound_param: str | None = None
