"""llm-cache-proxy: a caching reverse proxy for OpenAI-compatible chat completions."""

__version__ = "0.1.0"
