"""Per-key spend budgets: atomic reserve/settle ledgers (in memory; in Redis with Lua), what a
request reserves (``plan``, from an endpoint's ``Demand``), the request-path guard (admit, reserve,
settle, hit charging), the errors it answers with, the state Redis' eviction guard, and the wiring
the app factory plugs in (``wiring``).

May import: obs, keys, storage, state, config, errors. Only ``proxy.app`` imports it at run time.
"""
