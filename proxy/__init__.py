"""llm-cache-proxy: a caching reverse proxy for OpenAI-compatible APIs.

The packages are the architecture (docs/architecture.md draws it): ``web`` → ``pipeline`` →
``endpoints`` / ``budget`` → ``flight`` → ``cache`` → ``upstream`` → ``obs`` → ``keys`` →
``storage``, each importing only the ones after it; ``app`` composes them, ``cli`` runs them.
"""

__version__ = "0.1.0"
