"""Built-in list prices and output limits of common models (the table below everything else).

Prices in USD per million tokens at time of writing (2025); providers change them, so every
entry can be overridden in TOML under ``[pricing."model"]`` and the upstream's own model list
takes precedence when it publishes prices (see ``proxy.obs.pricing``). Prompt-caching discounts,
long-context tiers and batch prices are deliberately not modelled: the proxy reports what an
uncached, standard request would have cost.

``max_output_tokens`` is the vendor's documented limit (OpenAI model pages, Anthropic "Models
overview", Google "Gemini models"): a reservation never covers more, and a request is never
sent upstream with a larger bound. ``input_tokens_per_image`` is the most one image costs:
OpenAI tiles (85 + 170 per 512 px tile, at most 8 tiles after scaling to 2048 x 768: 1,445;
gpt-4o-mini bills 2,833 + 5,667 per tile: 48,169), patch models (1,536 patches times the
model's multiplier), Anthropic (about width x height / 750, at most ~1,600), Gemini 2.x
(258 per 768 px tile, 3 x 3 tiles for a 2048 px image: 2,322).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from fractions import Fraction
from types import MappingProxyType

from proxy.obs.model_price import ModelPrice

# One generated image is billed as 1,290 output tokens (Gemini image models, $30/M: $0.0387).
IMAGE_OUTPUT_TOKENS = 1290
# The smallest completion a budget grants an image model: one image plus a caption. Gemini counts
# image tokens against the output limit, so a bound of exactly 1,290 could cut the image off.
IMAGE_CAPTION_TOKENS = 256

_COMPLETION = "max_completion_tokens"


def _price(
    input_usd: str,
    output_usd: str,
    max_output: int,
    *,
    typical: int = 1000,
    image_tokens: int = 1600,
    param: str = "max_tokens",
) -> ModelPrice:
    return ModelPrice(
        Fraction(input_usd),
        Fraction(output_usd),
        typical_completion_tokens=typical,
        max_output_tokens=max_output,
        max_tokens_param=param,
        input_tokens_per_image=image_tokens,
    )


def _reasoning(input_usd: str, output_usd: str, max_output: int, image_tokens: int = 1445) -> ModelPrice:
    """An OpenAI reasoning model: long hidden reasoning, bounded by max_completion_tokens."""
    return _price(
        input_usd, output_usd, max_output, typical=4000, image_tokens=image_tokens, param=_COMPLETION
    )


def _embedding(input_usd: str) -> ModelPrice:
    """An embedding model bills input tokens only: no completion is granted, bounded or charged."""
    return ModelPrice(Fraction(input_usd), Fraction(0), typical_completion_tokens=0, max_output_tokens=1)


# Gemini bills an image in tokens; through an Images API that reports no usage (LLMGateway's)
# an image is priced as those 1,290 tokens: $0.0387.
_GEMINI_IMAGE = replace(
    _price("0.30", "30", 32_768, typical=IMAGE_OUTPUT_TOKENS + IMAGE_CAPTION_TOKENS, image_tokens=2322),
    per_image_usd=Fraction("0.0387"),
)

# The largest image a GPT image model draws bills 6,240 output tokens (high quality, 1024x1536 or
# 1536x1024; OpenAI image generation guide, "Cost and latency"): the images API takes no completion
# bound, so a reservation covers that much per image. An input image at high fidelity costs up to
# as much again. Without a usage report an image is priced as a medium 1024x1024 one (1,056 tokens).
GPT_IMAGE_MAX_TOKENS = 6240
GPT_IMAGE_MEDIUM_TOKENS = 1056


def _gpt_image(text_usd: str, image_input_usd: str, output_usd: str) -> ModelPrice:
    """A GPT image model: text and image input tokens priced apart, images billed as output tokens."""
    return ModelPrice(
        Fraction(text_usd),
        Fraction(output_usd),
        per_image_usd=GPT_IMAGE_MEDIUM_TOKENS * Fraction(output_usd) / 1_000_000,
        typical_completion_tokens=GPT_IMAGE_MAX_TOKENS,
        max_output_tokens=GPT_IMAGE_MAX_TOKENS,
        input_tokens_per_image=GPT_IMAGE_MAX_TOKENS,
        input_image_per_million_usd=Fraction(image_input_usd),
    )


DEFAULT_PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        # OpenAI
        "gpt-4o": _price("2.50", "10.00", 16_384, image_tokens=1445),
        "gpt-4o-mini": _price("0.15", "0.60", 16_384, image_tokens=48_169),
        "gpt-4.1": _price("2.00", "8.00", 32_768, image_tokens=1445),
        "gpt-4.1-mini": _price("0.40", "1.60", 32_768, image_tokens=2489),
        "gpt-4.1-nano": _price("0.10", "0.40", 32_768, image_tokens=3779),
        "o1": _reasoning("15.00", "60.00", 100_000),
        "o3": _reasoning("2.00", "8.00", 100_000),
        "o3-mini": _reasoning("1.10", "4.40", 100_000),
        "o3-pro": _reasoning("20.00", "80.00", 100_000),
        "o4-mini": _reasoning("1.10", "4.40", 100_000, image_tokens=2642),
        "gpt-5": _reasoning("1.25", "10.00", 128_000),
        "gpt-5-mini": _reasoning("0.25", "2.00", 128_000, image_tokens=2489),
        "gpt-5-nano": _reasoning("0.05", "0.40", 128_000, image_tokens=3779),
        "gpt-3.5-turbo": _price("0.50", "1.50", 4096),
        # OpenAI image models (the Images API): $5/M text in, $10/M image in, $40/M out.
        "gpt-image-1": _gpt_image("5.00", "10.00", "40.00"),
        "gpt-image-1-mini": _gpt_image("2.00", "2.50", "8.00"),
        # OpenAI embeddings (per million input tokens)
        "text-embedding-3-small": _embedding("0.02"),
        "text-embedding-3-large": _embedding("0.13"),
        "text-embedding-ada-002": _embedding("0.10"),
        # Anthropic
        "claude-3-haiku": _price("0.25", "1.25", 4096),
        "claude-3-5-haiku": _price("0.80", "4.00", 8192),
        "claude-3-5-sonnet": _price("3.00", "15.00", 8192),
        "claude-3-7-sonnet": _price("3.00", "15.00", 64_000),
        "claude-sonnet-4": _price("3.00", "15.00", 64_000),
        "claude-3-opus": _price("15.00", "75.00", 4096),
        "claude-opus-4": _price("15.00", "75.00", 32_000),
        "claude-opus-4-1": _price("15.00", "75.00", 32_000),
        # Google (prompts up to 200k tokens for 2.5 Pro)
        "gemini-2.5-pro": _price("1.25", "10.00", 65_536, typical=4000, image_tokens=2322),
        "gemini-2.5-flash": _price("0.30", "2.50", 65_536, image_tokens=2322),
        "gemini-2.5-flash-lite": _price("0.10", "0.40", 65_536, image_tokens=2322),
        "gemini-2.0-flash": _price("0.10", "0.40", 8192, image_tokens=2322),
        "gemini-2.0-flash-lite": _price("0.075", "0.30", 8192, image_tokens=2322),
        "gemini-2.5-flash-image-preview": _GEMINI_IMAGE,
        "gemini-2.5-flash-image": _GEMINI_IMAGE,
    }
)
