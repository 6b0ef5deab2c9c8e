"""Byte stores (in-memory LRU, Redis, Redis Cluster) behind the ``ByteStore`` protocol, and the only
vocabulary for an outage: ``StoreUnavailable``, raised by ``guarded`` from timeouts, ``RedisError``,
``RedisClusterException`` and ``OSError``. Every other module catches that one exception.

May import: util only (and redis-py, aiocache).
"""
