"""Per-key spend budgets: atomic reserve/settle ledgers (memory, Redis + Lua), the reservation plan,
the request-path guard and the state Redis' eviction guard."""
