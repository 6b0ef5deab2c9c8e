"""Who is calling: managed keys (values and validation, stores in memory or Redis, TOML keys),
authentication of a bearer, verification of pass-through callers with the upstream, the routes a
managed key may pass through, and the one digest of a secret (``settings.hash_secret``).

May import: storage, config, errors.
"""
