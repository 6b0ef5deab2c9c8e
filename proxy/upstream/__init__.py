"""The upstream: one client session, header filtering, the relay of a miss, SSE parsing."""
