"""The simulator's model catalogue, answered in LLMGateway's ``GET /v1/models`` shape.

Shape as LLMGateway's gateway builds it (theopenco/llmgateway, ``apps/gateway/src/models/
models.ts``): per model ``id``, ``name``, ``aliases``, ``family``, ``architecture``, ``pricing``
(``prompt``/``completion`` USD per token, ``image`` USD per input image, ``request`` USD per
call, all decimal strings), ``free``; plus OpenAI's ``object``/``owned_by`` so the openai SDK's
``models.list()`` reads it too. Prices are written both ways JavaScript prints numbers (``2.5e-6``
and ``0.0000025``), and one entry carries the catalogue's ``"0"`` for an unknown price, so the
proxy's price loader meets what the real one sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.sim.embeddings import DIMENSIONS
from proxy.sim.images import DEFAULT_MODEL as IMAGES_API_MODEL
from proxy.sim.payloads import IMAGE_MODELS, TEXT_MODELS


@dataclass(frozen=True, slots=True)
class SimModel:
    """One catalogue entry: prices as the upstream writes them."""

    id: str
    prompt: str
    completion: str
    image: str = "0"
    request: str = "0"
    free: bool = False
    aliases: tuple[str, ...] = ()
    output: tuple[str, ...] = ("text",)


# The same list prices as the proxy's built-in table for the models both know.
CATALOGUE: tuple[SimModel, ...] = (
    SimModel("gpt-4o-mini", "0.15e-6", "0.6e-6", aliases=("gpt-4o-mini-2024-07-18",)),
    SimModel("gpt-4o", "2.5e-6", "10.0e-6"),
    # Known only to the upstream: priced by the list alone, in plain decimal notation.
    SimModel("sim-text-1", "0.0000025", "0.00001", aliases=("sim-text",)),
    SimModel("gemini-2.5-flash-image-preview", "0.3e-6", "30e-6", output=("text", "image")),
    # The Images API's model: gpt-image-1's list prices per token ($5/M text in, $40/M image out).
    SimModel("gpt-image-1", "5e-6", "40e-6", output=("image",)),
    # Embedding models bill input tokens only (OpenAI pricing: $0.02, $0.13, $0.10 per million).
    SimModel("text-embedding-3-small", "0.02e-6", "0", output=("embedding",)),
    SimModel("text-embedding-3-large", "0.13e-6", "0", output=("embedding",)),
    SimModel("text-embedding-ada-002", "0.0000001", "0", output=("embedding",)),
    SimModel("sim-free-1", "0", "0", free=True),
    SimModel("sim-unpriced-1", "0", "0"),  # the catalogue's "no price known"
)
assert {m.id for m in CATALOGUE} >= {*TEXT_MODELS, *IMAGE_MODELS, IMAGES_API_MODEL, *DIMENSIONS}


def model_list(created: int) -> dict[str, Any]:
    """The ``/v1/models`` body."""
    data = [
        {
            "id": model.id,
            "object": "model",
            "created": created,
            "owned_by": "simulator",
            "name": model.id,
            "aliases": list(model.aliases),
            "family": "simulator",
            "architecture": {"input_modalities": ["text", "image"], "output_modalities": list(model.output)},
            "pricing": {
                "prompt": model.prompt,
                "completion": model.completion,
                "image": model.image,
                "request": model.request,
            },
            "free": model.free,
        }
        for model in CATALOGUE
    ]
    return {"object": "list", "data": data}
